"""The durable reader of the tick log (README "The tick log"): a member of a consumer
group that processes every tick at least once, across restarts and crashes.

`consume` reads ``NS:ticks`` with XREADGROUP, acknowledges each tick after the handler
returned, takes pending ticks back after a crash, and raises `LogTrimmed` when the group
fell so far behind that ticks it never processed were trimmed away. `shared.subscriber`
re-exports both, where the README's examples import them from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.backoff import Backoff
from shared.errors import CodecError, PricefeedError
from shared.keys import Keys, Layout
from shared.redisio import CONNECTION_ERRORS, honour_cancel
from shared.redisio.cluster import SLOT_ERRORS, ClusterTopology
from shared.ticklog import LogEntry, decode_entry

log = logging.getLogger(__name__)


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
    durable = _Durable(redis, keys, group, consumer, handler, count)
    await _run(durable, start, block_ms, claim_idle_ms, backoff, CONNECTION_ERRORS, None)


Resolver = Callable[[bool], Awaitable[Redis]]


async def _run(durable: _Durable, start: str, block_ms: int, claim_idle_ms: int,
               backoff: Backoff | None, lost: tuple[type[BaseException], ...],
               resolve: Resolver | None) -> None:
    """`consume`'s loop: open the group, run, and after a lost connection (any of
    ``lost``) retry with backoff; ``resolve(after_error)`` gives the client to use each
    time (on a Cluster, the primary serving the log's slot as the Cluster says now)."""
    retry = backoff or Backoff(initial_s=0.2, cap_s=5.0)
    down = False
    while True:
        try:
            if resolve is not None:
                durable.redis = await resolve(down)
            await durable.open(start)
            if down:
                log.info("durable consumer %s/%s reconnected", durable.group, durable.consumer)
                down = False
            retry.reset()
            await durable.run(block_ms, claim_idle_ms)
        except lost as e:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from e  # a cancel must still end us
            if not down:
                # On a Cluster each partition's log has its own loop: say which one.
                log.warning("lost Redis (%s)%s; retrying with backoff", e or type(e).__name__,
                            "" if resolve is None else f" reading {durable.keys.ticks}")
                down = True
            await asyncio.sleep(retry.next_delay())


async def consume_cluster(
    topology: ClusterTopology,
    layout: Layout,
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
    """`consume` on a Cluster (docs/CLUSTER.md "Reading"): the consumer group ``group`` on
    every partition's log ``NS:{pI}:ticks``, each read by its own task on the primary
    serving it, followed to another primary after a failover or a moved slot.

    Within a partition, entries reach ``handler`` in log order, one at a time; the
    partitions run concurrently, so ``handler`` may be running for two partitions at once.
    An entry's seq is its partition's (`shared.keys.partition_of` of any of its tickers).
    The first partition that raises (`LogTrimmed`, naming its log, or the handler's
    exception) ends them all, and `consume_cluster` raises it."""
    tasks = [asyncio.create_task(
        _run(_Durable(None, keys, group, consumer, handler, count), start, block_ms,
             claim_idle_ms, replace(backoff, attempts=0) if backoff else None,  # one each
             (*CONNECTION_ERRORS, *SLOT_ERRORS),
             _resolver(topology, keys)), name=f"consume-{keys.ticks}")
        for keys in layout.all()]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # raises the first partition's error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)


def _resolver(topology: ClusterTopology, keys: Keys) -> Resolver:
    async def resolve(after_error: bool) -> Redis:
        await topology.refresh(force=after_error)
        return topology.client_for(keys)
    return resolve


class _Durable:
    """One consumer's reads, acks and checks against the group."""

    CHECK_EVERY_S: Final[float] = 5.0  # how often the group's position is checked

    def __init__(self, redis: Redis | None, keys: Keys, group: str, consumer: str,
                 handler: Handler, count: int) -> None:
        # None until `_run` resolves it (a Cluster's primary of ``keys``' slot)
        self.redis = cast(Redis, redis)
        self.keys, self.group, self.consumer = keys, group, consumer
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
