"""A small subscriber API for other services: the cache snapshot, then live updates.

    from contextlib import aclosing
    from shared.keys import Keys
    from shared.redisio import CONSUMER, connect
    from shared.settings import Settings
    from shared.subscriber import snapshot, subscribe

    client = connect(Settings.from_env(), CONSUMER)        # REDIS_URL and its TLS files
    prices = await snapshot(client, Keys())                # {TICKER: PriceUpdate}
    async with aclosing(subscribe(client, Keys(), tickers=["AAPL"])) as batches:
        async for batch in batches:                        # Batch(updates, snapshot)
            ...

`subscribe` subscribes to ``NS:prices`` *before* reading ``NS:latest``, so no tick falls
between the two; updates already covered by the snapshot (by ``seq``) are dropped. After
a lost connection it retries with capped backoff and yields a fresh snapshot batch
(``snapshot=True``) once Redis answers again, so a consumer never misses a price. When
``NS:epoch`` changes (a wiped Redis: the seqs may start over), the next batch is a fresh
snapshot with ``reset=True``: drop what you hold, it belongs to another dataset.

`consume` is the durable mode: it reads the tick log ``NS:ticks`` as a member of a
consumer group (XREADGROUP), acknowledges each tick after your handler returned, takes
pending ticks back after a crash, and raises `LogTrimmed` when the group fell so far
behind that ticks it never processed were trimmed away::

    async def handle(entry: LogEntry) -> None:   # entry.seq, entry.ms, entry.updates
        ...
    await consume(client, Keys(), group="valuation", consumer="worker-1", handler=handle)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.backoff import Backoff
from shared.codec import decode_map
from shared.errors import CodecError, PricefeedError
from shared.keys import Keys
from shared.models import PriceUpdate
from shared.redisio import CONNECTION_ERRORS, Snapshot, honour_cancel, read_latest, subscription
from shared.ticklog import LogEntry, decode_entry

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Batch:
    """Updates keyed by ticker. ``snapshot`` is True for the full state read from the
    cache (the first batch, and the first after every reconnect); False for a live tick.
    ``reset`` is True for the snapshot of a new dataset (``NS:epoch`` changed)."""

    updates: Mapping[str, PriceUpdate]
    snapshot: bool
    reset: bool = False


async def snapshot(
    redis: Redis, keys: Keys, tickers: Collection[str] | None = None
) -> dict[str, PriceUpdate]:
    """The latest price of each ticker in ``NS:latest`` (only ``tickers`` when given).

    A malformed cache entry is logged and left out rather than failing the whole read.
    """
    return await read_latest(redis, keys, tickers)


async def subscribe(
    redis: Redis,
    keys: Keys,
    tickers: Collection[str] | None = None,
    *,
    backoff: Backoff | None = None,
    on_state: Callable[[bool], None] | None = None,
) -> AsyncGenerator[Batch, None]:
    """Yield a snapshot batch, then one batch per producer tick, forever.

    ``tickers`` narrows both; ``on_state(True|False)`` is told when the subscription is
    live or lost. Close it with ``aclosing`` (or by cancelling the task iterating it).
    """
    wanted = frozenset(tickers) if tickers is not None else None
    retry = backoff or Backoff(initial_s=0.2, cap_s=5.0)
    dataset = _Dataset()
    down = False
    while True:
        try:
            async for batch in _session(redis, keys, wanted, dataset):
                if down or batch.snapshot:
                    retry.reset()
                    if down:
                        log.info("subscription to %s restored", keys.prices)
                    down = False
                    if on_state is not None:
                        on_state(True)
                yield batch
        except CONNECTION_ERRORS as e:
            # A cancel dropped by a Redis call (honour_cancel) is raised here too: while
            # Redis refuses us, the session fails before it reaches its own check, and
            # this loop would retry for ever.
            honour_cancel(asyncio.current_task())
            if not down:
                log.warning("lost Redis (%s); retrying with backoff", e or type(e).__name__)
                down = True
                if on_state is not None:
                    on_state(False)
            await asyncio.sleep(retry.next_delay())


class _Dataset:
    """The ``NS:epoch`` last read, kept across sessions: a Redis that comes back wiped, with
    a fresh producer whose seqs start over, must give a reset, not a snapshot whose lower
    seqs a reader would drop as old. None: no epoch (nothing written, or a wiped Redis)."""

    def __init__(self) -> None:
        self.epoch: Any = None

    def changed(self, epoch: Any) -> bool:
        """Note ``epoch``; True when it replaces another one (None replaces one too)."""
        changed = self.epoch is not None and epoch != self.epoch
        self.epoch = epoch
        return changed


async def _session(
    redis: Redis, keys: Keys, wanted: frozenset[str] | None, dataset: _Dataset
) -> AsyncGenerator[Batch, None]:
    """One connection's worth of batches; raises a connection error when it breaks."""

    async def read() -> tuple[Any, dict[str, PriceUpdate]]:
        return await redis.get(keys.epoch), await snapshot(redis, keys, wanted)

    seen: dict[str, int] = {}
    bad = 0
    events = subscription(redis, (keys.prices,), read)
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Snapshot):
                # The first confirmation opens the session; another one means redis-py
                # reconnected and re-subscribed on its own: ticks may have been missed,
                # so the cache was read again.
                epoch, state = event.value
                seen = {t: u.seq for t, u in state.items()}
                yield Batch(state, snapshot=True, reset=dataset.changed(epoch))
                continue
            current = await redis.get(keys.epoch)
            if current != dataset.epoch:  # a wiped Redis: this tick is in the new snapshot
                log.warning("%s changed: Redis holds a new dataset; taking its snapshot",
                            keys.epoch)
                reset = dataset.changed(current)
                state = await snapshot(redis, keys, wanted)
                seen = {t: u.seq for t, u in state.items()}
                yield Batch(state, snapshot=True, reset=reset)
                continue
            try:
                fresh = _fresh(event.data, wanted, seen)
            except CodecError as e:
                bad += 1
                if bad == 1 or bad % 1000 == 0:  # one line per problem, not a flood
                    log.warning("skipped %d malformed tick message(s); last: %s", bad, e)
                continue
            if fresh:
                yield Batch(fresh, snapshot=False)


def _fresh(
    payload: Any, wanted: frozenset[str] | None, seen: dict[str, int]
) -> dict[str, PriceUpdate]:
    """The updates of one tick message that are wanted and newer than what was seen;
    raises `CodecError` for a malformed message."""
    tick = decode_map(payload)
    fresh: dict[str, PriceUpdate] = {}
    for ticker, update in tick.items():
        if wanted is not None and ticker not in wanted:
            continue
        if update.seq <= seen.get(ticker, -1):
            continue
        seen[ticker] = update.seq
        fresh[ticker] = update
    return fresh


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LogTrimmed(PricefeedError):
    """The consumer group's position is older than the tick log: ticks it never processed
    were trimmed away (or the log itself was deleted). Processing cannot go on gap-free."""


Handler = Callable[[LogEntry], Awaitable[None]]


async def consume(
    redis: Redis,
    keys: Keys,
    group: str,
    consumer: str,
    handler: Handler,
    *,
    start: str = "$",
    count: int = 64,
    block_ms: int = 1000,
    claim_idle_ms: int = 30_000,
    backoff: Backoff | None = None,
) -> None:
    """Process every tick of ``NS:ticks`` at least once, across restarts, as ``consumer``
    of the consumer group ``group`` (created at ``start``: ``$`` new ticks, ``0`` the
    whole log). Runs until cancelled.

    Each entry is acknowledged (XACK) only after ``handler`` returned, so a crash leaves
    it pending: on the next start this consumer's pending entries come first, then those
    another consumer left pending for ``claim_idle_ms`` (XAUTOCLAIM). A handler exception
    ends `consume` and leaves its entry pending. A malformed entry is logged and acked.
    Raises `LogTrimmed` when entries the group never processed were trimmed away.
    """
    retry = backoff or Backoff(initial_s=0.2, cap_s=5.0)
    durable = _Durable(redis, keys, group, consumer, handler, count)
    down = False
    while True:
        try:
            await durable.open(start)
            if down:
                log.info("durable consumer %s/%s reconnected", group, consumer)
                down = False
            retry.reset()
            await durable.run(block_ms, claim_idle_ms)
        except CONNECTION_ERRORS as e:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from e  # a cancel must still end us
            if not down:
                log.warning("lost Redis (%s); retrying with backoff", e or type(e).__name__)
                down = True
            await asyncio.sleep(retry.next_delay())


class _Durable:
    """One consumer's reads, acks and checks against the group."""

    CHECK_EVERY_S: Final[float] = 5.0  # how often the group's position is checked

    def __init__(self, redis: Redis, keys: Keys, group: str, consumer: str, handler: Handler,
                 count: int) -> None:
        self.redis, self.keys, self.group, self.consumer = redis, keys, group, consumer
        self.handler, self.count = handler, count
        self.bad = 0
        self._checked = 0.0

    async def open(self, start: str) -> None:
        """Create the group if it does not exist yet, then check its position."""
        try:
            await self.redis.xgroup_create(self.keys.ticks, self.group, id=start, mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        await self.check()

    async def check(self) -> None:
        """Raise `LogTrimmed` if an entry after the group's position was trimmed."""
        self._checked = asyncio.get_running_loop().time()
        groups = await self.redis.xinfo_groups(self.keys.ticks)
        mine = next((g for g in groups if _text(g["name"]) == self.group), None)
        if mine is None:
            raise LogTrimmed(f"consumer group {self.group!r} of {self.keys.ticks} is gone "
                             "(the log was deleted or Redis wiped); start over from a snapshot")
        info = await self.redis.xinfo_stream(self.keys.ticks)
        first = info.get("first-entry")
        delivered, read = mine["last-delivered-id"], mine.get("entries-read")
        # Trimming removes a prefix: with the log's first entry past the group's position,
        # every entry still there is unread, so fewer of them than the group has unread
        # means the rest were trimmed (Redis 7 counts entries added and read per group).
        unread = None if read is None else int(info["entries-added"]) - int(read)
        if first and _id(first[0]) > _id(delivered) and unread and unread > info["length"]:
            raise LogTrimmed(
                f"{self.keys.ticks} trimmed {unread - info['length']} entries that group "
                f"{self.group!r} never read (it is at {_text(delivered)}, the log starts at "
                f"{_text(first[0])}): raise PRICEFEED_HISTORY_LEN / _SECONDS or consume "
                "faster; to go on, XGROUP SETID the group and start from a snapshot")

    async def run(self, block_ms: int, claim_idle_ms: int) -> None:
        await self._drain(await self._read("0"))  # our own pending entries first
        claimed = await self.redis.xautoclaim(self.keys.ticks, self.group, self.consumer,
                                              claim_idle_ms, "0-0", count=self.count)
        await self._drain(claimed[1])
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while True:
            entries = await self._read(">", block_ms)
            honour_cancel(task)
            if loop.time() - self._checked > self.CHECK_EVERY_S:
                await self.check()
            await self._drain(entries)

    async def _read(self, at: str, block_ms: int | None = None) -> list[Any]:
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.keys.ticks: at},
            count=None if at == "0" else self.count, block=block_ms)
        return list(reply[0][1]) if reply else []

    async def _drain(self, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            if not fields:  # pending, but trimmed before it was processed
                raise LogTrimmed(f"pending entry {_text(entry_id)} of group {self.group!r} "
                                 f"was trimmed from {self.keys.ticks} before it was processed")
            try:
                entry = decode_entry(entry_id, fields)
            except CodecError as e:
                self.bad += 1
                if self.bad == 1 or self.bad % 1000 == 0:
                    log.warning("acked %d malformed tick log entries; last %r: %s", self.bad,
                                _text(entry_id), e)
            else:
                await self.handler(entry)
            await self.redis.xack(self.keys.ticks, self.group, entry_id)


def _id(raw: bytes | str) -> tuple[int, int]:
    ms, _, n = _text(raw).partition("-")
    return int(ms), int(n or 0)
