"""The publisher: turns a source's quotes into PriceUpdates and writes each tick atomically.

Each tick is ONE transaction, fenced by the lease (`producer.transaction`), that appends
the tick map to the log ``NS:ticks``, writes every update into ``NS:latest``, publishes each
on its channel and the tick map on ``NS:prices`` (README "The Redis contract"). The publisher owns
``previous_price`` and ``seq``; sources hand it quotes only.

Speed (docs/PERFORMANCE.md: updates/s at 10,000 tickers): seqs come from blocks
reserved ahead in ``NS:seq`` (one round trip per ~64 ticks, not per tick), the tick is
encoded column by column (`producer.encoding`), and the next tick is encoded while Redis
still runs the previous one: `publish` returns once its tick is *sent*; the reply is
awaited before the next tick is sent (`settle`). A lost lease or a Redis error goes to
`failure`, never raised from `publish` (it is the sources' sink); the runner awaits it.

Redis out of memory (``maxmemory`` under ``noeviction``) refuses every tick but is not a
failure of the term: the lease and the status can still be written (see `producer.lease`),
so the publisher keeps the term, marks itself `out_of_memory` (the status shows it), tries
each tick again, and rewrites the whole cache with the first tick that lands.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection as Connection
from redis.exceptions import OutOfMemoryError, RedisError

from producer.bar_store import BACKFILL_BARS, load_bars, ticks_after
from producer.bars import EMPTY, BarBook, Bars, merge_folds
from producer.commands import BarPacker, Commands, TickPacker, command
from producer.encoding import EncodedTick, TickEncoder
from producer.lease import LeaseLost
from producer.reference import DayReferences
from producer.scripts import RESERVE_SEQ, Script
from producer.sources.base import PriceBatch, Quote
from producer.transaction import FencedWriter, wrap
from shared.bars import Bar, encode_bar
from shared.codec import encode_update
from shared.keys import Keys
from shared.models import PriceUpdate
from shared.settings import DEFAULT_HISTORY_LEN, DEFAULT_HISTORY_S
from shared.tasks import stop_tasks
from shared.ticklog import new_epoch

log = logging.getLogger(__name__)

MAX_TIMESTAMP: Final[float] = 1e11  # the codec's bound on Unix seconds
SEQ_BLOCK_TICKS: Final[int] = 64  # a seq block lasts this many ticks of the current size
MIN_SEQ_BLOCK: Final[int] = 1024

FAILURES = (RedisError, OSError, LeaseLost)
REPLAY_MOST: Final[int] = 10_000  # tick log entries replayed into the bars at most
LOG_SLACK: Final[int] = 200  # MAXLEN ~ keeps up to one stream node (100 entries) more


def _now_ms() -> int:
    return int(time.time() * 1000)


class Publisher:
    """Writes ticks into Redis for the lease owner ``owner_id``."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, owner_id: str,
        history_len: int = DEFAULT_HISTORY_LEN, history_s: float = DEFAULT_HISTORY_S,
        bars: BarOptions | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.owner_id = owner_id
        self.history_len = history_len  # 0: no tick log
        self.history_ms = int(history_s * 1000)
        self.bar_options = bars
        self.bars: BarBook | None = None  # built per term by `restore_bars`
        self._replayed: list[Mapping[str, tuple[Bars, list[str]]]] = []  # closes to write
        self._forming_seq = 0  # the last seq folded into the bars
        self._reserve = Script(redis, RESERVE_SEQ)
        self._writer = FencedWriter(redis, keys.lease, owner_id)
        self._packer = TickPacker(keys)
        self._encoder = TickEncoder()
        self._bar_packer = BarPacker(keys)
        self._references = DayReferences(redis, keys, owner_id)
        self._lock = asyncio.Lock()
        self._allowed: set[str] = set()
        self._previous: dict[str, float] = {}
        self._payloads: dict[str, bytes] = {}  # the last payload per ticker, to rewrite the cache
        # The last tick, folded into the two dicts only when the next tick differs.
        self._tail: tuple[Sequence[str], np.ndarray, EncodedTick] | None = None
        self._seq_next, self._seq_end = 1, 0
        self._rewrite = False
        self._inflight: asyncio.Task[None] | None = None
        self._invalid_logged: set[str] = set()
        self._epoch = new_epoch()  # NS:epoch if the dataset has none
        # (last seq, wall ms) of each entry in the log, oldest first, for the MINID age cap.
        self._logged: collections.deque[tuple[int, int]] = collections.deque()
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failure.set_result(None)  # no term yet: nothing is published
        self.landed = asyncio.Event()  # set once a tick of the current term has landed
        self.out_of_memory = False
        self.ticks = 0

    def begin(
        self, tickers: Iterable[str], cached: Mapping[str, PriceUpdate],
        logged: Sequence[tuple[int, int]] = (), seq_floor: int = 0,
    ) -> None:
        """Start a term: publish ``tickers``, continuing from ``cached`` (from ``NS:latest``)
        and above the ``(seq, ms)`` ids already in ``NS:ticks`` (``logged``, oldest first)
        and ``seq_floor`` (the `seq_top` of this process's earlier publisher of the same
        seqs, when there was one: a Cluster partition's publisher is rebuilt per node).

        The first tick also rewrites the cache with every ticker's latest payload, so a
        Redis that lost its data is complete again. A fresh seq block is reserved.
        """
        self._fold()
        self._epoch = new_epoch()
        self._logged = collections.deque(logged)
        self._seq_end = max(self._seq_end, seq_floor)
        if logged:
            self._seq_end = max(self._seq_end, logged[-1][0])
        self._allowed = set(tickers)
        for ticker, update in cached.items():
            self._previous[ticker] = update.price
            self._payloads[ticker] = encode_update(update)
            self._seq_end = max(self._seq_end, update.seq)
        self._forget(set(self._previous) - self._allowed)
        self._seq_next = self._seq_end + 1  # the rest of an old block is never used
        self._rewrite = True
        self._references.reset()
        self.failure = asyncio.get_running_loop().create_future()
        self.landed = asyncio.Event()

    async def restore_bars(self, tickers: Sequence[str]) -> None:
        """Continue the bars of ``tickers`` from Redis (forming bars, newest closes).

        Called at the start of every term, so a standby that takes over goes on exactly
        from what the last landed tick left (docs/BARS.md "Continuity").
        """
        if self.bar_options is None:
            return
        self.bars = BarBook(self.bar_options.forming_interval_s)
        self._replayed = []
        self._forming_seq = 0
        await self._restore(list(tickers))

    async def _restore(self, tickers: list[str]) -> None:
        book = self.bars
        if book is None:
            return
        stored, seq = await load_bars(self.redis, self.keys, tickers)
        for interval, by_ticker in stored.items():
            series = book.series[interval]
            for ticker, (forming, last_closed) in by_ticker.items():
                series.restore(ticker, forming, last_closed)
        if seq is None or not tickers or self.history_len == 0:
            return
        # Ticks that landed after the last forming write (a crashed predecessor's last
        # ~forming_interval_s): folded again from the tick log, so nothing is lost
        # (docs/BARS.md "Continuity").
        wanted = set(tickers)
        for entry in await ticks_after(self.redis, self.keys, seq, REPLAY_MOST):
            updates = [u for t, u in entry.updates.items() if t in wanted]
            if updates:
                folded = book.fold([u.ticker for u in updates],
                                   np.array([u.price for u in updates]),
                                   np.array([u.timestamp for u in updates]), None)
                self._replayed.append(folded)
            self._forming_seq = max(self._forming_seq, entry.seq)

    async def flush_bars(self, timeout_s: float = 0.5) -> None:
        """Write the forming bars not yet in Redis (a clean stop: the successor goes on
        from every update). Errors are moot here: the term is ending."""
        if self.bars is None or self.failure.done():
            return
        async with self._lock:
            await self.settle()
            if self.failure.done() or not self.bars.dirty():
                return
            bars = self._bar_commands({}, force=True)
            if bars is None:
                return
            try:
                async with asyncio.timeout(timeout_s):
                    await self._writer.write(wrap(bars.parts), bars.count)
            except (*FAILURES, TimeoutError) as e:
                log.warning("could not write the forming bars before stopping: %s", e)

    async def write_backfill(self, ticker: str, bars: Sequence[Bar]) -> int:
        """Add backfilled 1 min ``bars`` of ``ticker`` for minutes with no bar yet, before the
        forming one and within the retention; how many were added."""
        if self.bars is None or self.bar_options is None or ticker not in self._allowed:
            return 0
        keep = self.bar_options.retention_s["1m"]
        forming = self.bars.series["1m"].current(ticker)
        cutoff = forming.t if forming is not None else int(time.time() // 60 * 60)
        args: list[str | bytes | int] = [self.owner_id, keep, cutoff, cutoff - keep]
        for bar in bars:
            args += (bar.t, encode_bar(bar))
        # Fenced by the lease itself: the heartbeat key is written only once a tick of the
        # term has landed, and the backfill may finish before that (docs/REDIS.md).
        added = int(await self.redis.eval(BACKFILL_BARS, 2, self.keys.lease,
                                          self.keys.bars("1m", ticker), *args))
        if added < 0:
            raise LeaseLost(f"{self.keys.lease} is no longer held by {self.owner_id}")
        return added

    @property
    def seq_top(self) -> int:
        """The highest seq this publisher reserved: none at or below it may be handed out
        again."""
        return self._seq_end

    def last_prices(self) -> dict[str, float]:
        """The last price published per ticker (to continue from when the cache is empty)."""
        self._fold()
        return dict(self._previous)

    async def add_ticker(self, ticker: str, cached: PriceUpdate | None = None) -> None:
        """Publish ``ticker`` from now on, continuing from its ``cached`` update if any."""
        async with self._lock:
            self._fold()
            self._allowed.add(ticker)
            if cached is not None:
                self._previous[ticker] = cached.price
                self._payloads[ticker] = encode_update(cached)
            await self._restore([ticker])

    async def remove_ticker(self, ticker: str) -> None:
        """Never publish ``ticker`` again (until added) and delete it from the cache.

        Under the write lock and after the tick in flight has landed, so no tick can write
        it back after the HDEL.
        """
        async with self._lock:
            await self.settle()
            self._fold()
            self._allowed.discard(ticker)
            self._forget({ticker})
            self._packer.forget([ticker])
            self._bar_packer.forget([ticker])
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.latest, ticker)
                if self.bars is not None:
                    self.bars.remove([ticker])
                    for interval in self.bars.series:
                        pipe.hdel(self.keys.forming(interval), ticker)
                await pipe.execute()

    async def publish(self, quotes: Mapping[str, Quote]) -> None:
        """The sink: send one batch as one tick; errors go to `failure`, never raised."""
        if self.failure.done():
            return
        try:
            async with self._lock:
                await self._publish(quotes)
        except OutOfMemoryError as e:
            self._refused(e)
        except FAILURES as e:
            self._fail(e)

    async def settle(self) -> None:
        """Wait until the tick in flight has landed (its failure, if any, is in `failure`)."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    async def close(self, timeout_s: float = 0.5) -> None:
        """End the term: let the tick in flight land within ``timeout_s``, else drop it."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await asyncio.wait([task], timeout=timeout_s)
            await stop_tasks([task])
        if self.failure.done() and not self.failure.cancelled():
            self.failure.exception()  # the term is over: its failure was handled or is moot

    async def _publish(self, quotes: Mapping[str, Quote]) -> None:
        tickers, prices, stamps, volumes = self._accept(quotes)
        if not tickers and not self._rewrite:
            return
        first = await self._take_seq(len(tickers))
        references = await self._references.of(tickers, prices, stamps.tolist(), quotes)
        encoded = self._encoder.encode(tickers, prices, self._previous_of(tickers, prices),
                                       stamps, first, references)
        log_entry = self._log_entry(first + len(tickers) - 1) if tickers else None
        cached: list[tuple[str, bytes]] = []
        if self._rewrite:
            self._fold()
            sent = set(tickers)
            cached = [(t, p) for t, p in self._payloads.items() if t not in sent]
            self._rewrite = False  # before settle: a refusal found there asks for it again
        tick = self._packer.tick(encoded, log_entry, self._epoch, cached)
        if self.bars is not None and tickers:  # one atomic unit: docs/BARS.md "Consistency"
            self._forming_seq = first + len(tickers) - 1
            bars = self._bar_commands(self.bars.fold(tickers, prices, stamps, volumes))
            if bars is not None:
                tick.add(b"".join(bars.parts), bars.count)
        body = wrap(tick.parts)
        await self.settle()  # the previous tick has landed: send this one
        if self.failure.done():
            return
        conn = await self._writer.send(body)  # sent now; Redis runs it while we go on
        self._inflight = asyncio.create_task(
            self._land(conn, body, tick.count, tick.epoch_at), name="publish-tick")
        self._tail = (tickers, prices, encoded)
        self.ticks += 1

    def _bar_commands(self, folded: Mapping[str, tuple[Bars, list[str]]], force: bool = False
                      ) -> Commands | None:
        """The bar writes for what one tick closed, and the forming bars when due; None when
        there is nothing to write."""
        book, options = self.bars, self.bar_options
        assert book is not None and options is not None
        if self._replayed:  # closes met while replaying the tick log go out first
            folded = merge_folds([*self._replayed, folded])
            self._replayed = []
        closed_any = any(len(closed) or ended for closed, ended in folded.values())
        forming_due = force or book.forming_due(time.monotonic(), closed_any)
        if not closed_any and not forming_due:
            return None
        out = Commands()
        if forming_due:  # continuity replays the tick log after this seq (docs/BARS.md)
            out.add(command("SET", self.keys.forming_seq, self._forming_seq))
        for interval, series in book.series.items():
            closed, ended = folded.get(interval, (EMPTY, []))
            ended = [t for t in ended if not series.has_forming(t)]  # reopened since
            forming = series.forming() if forming_due else None
            bars = self._bar_packer.commands(interval, options.retention_s[interval], closed,
                                             forming, ended)
            out.add(b"".join(bars.parts), bars.count)
        return out

    async def _land(self, conn: Connection, body: bytes, count: int, epoch_at: int) -> None:
        try:
            results = await self._writer.land(conn, body, count)
            if results[epoch_at] is not None:  # a wipe later must never bring it back
                self._epoch = new_epoch()
        except OutOfMemoryError as e:
            self._refused(e)
        except FAILURES as e:
            self._fail(e)
        else:
            self.landed.set()
            if self.out_of_memory:
                self.out_of_memory = False
                log.info("Redis has memory again: ticks are written")

    def _log_entry(self, last_seq: int) -> tuple[str, int, str] | None:
        """The log entry id ``<last seq>-<ms>`` of a tick, the count cap, and the MINID that
        drops every entry past the age cap (the seq of the oldest entry young enough to
        stay); None with the log off."""
        if not self.history_len:
            return None
        now = _now_ms()
        logged = self._logged
        logged.append((last_seq, now))
        if len(logged) > self.history_len + LOG_SLACK:  # MAXLEN has trimmed those
            logged.popleft()
        cutoff = now - self.history_ms
        while logged[0][1] < cutoff:  # the entry just appended is never older
            logged.popleft()
        return f"{last_seq}-{now}", self.history_len, str(logged[0][0])

    async def _take_seq(self, n: int) -> int:
        """The first of ``n`` fresh seqs, from the current block or a newly reserved one."""
        if self._seq_next + n - 1 > self._seq_end:
            size = max(n * SEQ_BLOCK_TICKS, MIN_SEQ_BLOCK)
            last = int(await self._reserve(keys=[self.keys.seq], args=[size, self._seq_end]))
            self._seq_next, self._seq_end = last - size + 1, last
        first = self._seq_next
        self._seq_next += n
        return first

    def _previous_of(self, tickers: Sequence[str], prices: np.ndarray) -> np.ndarray:
        """Each ticker's previous price; its own price for a first update (flat)."""
        tail = self._tail
        if tail is not None and (tail[0] is tickers or tail[0] == tickers):
            return tail[1]  # the same tickers as last tick: the usual case, no dict work
        self._fold()
        prev = self._previous
        return np.array([prev.get(t, p) for t, p in zip(tickers, prices.tolist(), strict=True)])

    def _fold(self) -> None:
        """Fold the last tick into the per-ticker dicts."""
        if self._tail is not None:
            tickers, prices, encoded = self._tail
            self._tail = None
            self._previous.update(zip(tickers, prices.tolist(), strict=True))
            self._payloads.update(zip(tickers, encoded.payloads(), strict=True))

    def _accept(self, quotes: Mapping[str, Quote]
                ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None]:
        """The batch's watched tickers with a usable price (rounded to cents) and timestamp,
        and their trade sizes (NaN where unknown; None when no quote has one)."""
        allowed = self._allowed
        volumes: np.ndarray | None = None
        if isinstance(quotes, PriceBatch):
            tickers = list(quotes.tickers)
            prices = np.round(np.asarray(quotes.prices, dtype=float), 2)
            stamps = np.full(len(tickers), quotes.timestamp, dtype=float)
            if not allowed.issuperset(tickers):
                keep = np.array([t in allowed for t in tickers], dtype=bool)
                tickers = [t for t, ok in zip(tickers, keep.tolist(), strict=True) if ok]
                prices, stamps = prices[keep], stamps[keep]
        else:
            tickers = [t for t in quotes if t in allowed]
            values = [quotes[t] for t in tickers]
            prices = np.round(np.array([q.price for q in values], dtype=float), 2)
            stamps = np.array([q.timestamp for q in values], dtype=float)
            if any(q.size is not None for q in values):
                volumes = np.array([math.nan if q.size is None else q.size for q in values])
        # NaN fails every comparison, so it is dropped too.
        good = (prices > 0) & (prices < math.inf) & (stamps >= 0) & (stamps < MAX_TIMESTAMP)
        if not good.all():
            self._log_invalid({t for t, ok in zip(tickers, good.tolist(), strict=True) if not ok})
            keep_at = np.flatnonzero(good)
            tickers = [tickers[i] for i in keep_at.tolist()]
            prices, stamps = prices[keep_at], stamps[keep_at]
            if volumes is not None:
                volumes = volumes[keep_at]
        return tickers, prices, stamps, volumes

    def _refused(self, error: OutOfMemoryError) -> None:
        """A tick refused for lack of memory: say so once, retry, rewrite the cache then."""
        self._rewrite = True
        if not self.out_of_memory:
            self.out_of_memory = True
            log.warning("Redis is out of memory (%s): no tick can be written until memory is "
                        "freed or maxmemory raised; retrying every tick", error)

    def _fail(self, error: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_exception(error)

    def _log_invalid(self, tickers: set[str]) -> None:
        new = tickers - self._invalid_logged
        if new:
            log.warning("dropping quotes with a non-positive price or a bad timestamp: %s",
                        ", ".join(sorted(new)))
            self._invalid_logged |= new

    def _forget(self, tickers: set[str]) -> None:
        for ticker in tickers:
            self._previous.pop(ticker, None)
            self._payloads.pop(ticker, None)


@dataclass(frozen=True, slots=True)
class BarOptions:
    """How the publisher keeps bars: retention per interval and the forming-write cadence."""

    retention_s: Mapping[str, int]
    forming_interval_s: float
