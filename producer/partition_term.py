"""One Cluster partition written by this producer: its lease, its publisher, its term
(docs/CLUSTER.md "One atomic unit per partition per tick").

What a term does on one server (`producer.runner`), for one partition on the primary
serving its slot: the lease, heartbeat and status are the partition's, the publisher
begins from the partition's cache, log and seq and restores its bars. The term ends when
the lease is lost, a write fails (a Redis error, a ``MOVED`` after a failover or a
migration) or it is given up; only this partition stops, and a given-up partition's
lease is deleted so another producer takes it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import redis.asyncio as aioredis

from producer.lease import Lease, LeaseLost
from producer.publisher import FAILURES, BarOptions, Publisher
from producer.resume import log_ids_script, logged_ids, prune_cache
from shared.bars import Bar
from shared.keys import Keys
from shared.models import PriceUpdate
from shared.redisio import read_latest
from shared.settings import Settings
from shared.tasks import race, stop_tasks

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S: Final[float] = 0.5


class PartitionTerm:
    """Partition ``index`` (names ``keys``) written through ``redis``, its primary's client."""

    def __init__(self, index: int, keys: Keys, redis: aioredis.Redis, owner_id: str,
                 settings: Settings, bars: BarOptions | None,
                 status: Callable[[], Mapping[str, Any]]) -> None:
        self.index = index
        self.keys = keys
        self.redis = redis
        self.lease = Lease(redis, keys, owner_id)
        self.publisher = Publisher(redis, keys, owner_id, settings.history_len,
                                   settings.history_s, bars)
        self._history_len = settings.history_len
        self._status = status
        self._given_up = asyncio.Event()
        self._aborted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        """Whether ticks should still go to this partition's publisher."""
        return self.task is not None and not self.task.done() and not self._given_up.is_set()

    async def begin(self, tickers: Sequence[str], before: Publisher | None) -> dict[str, float]:
        """Continue the partition from Redis (and from ``before``, this process's previous
        publisher of it, when the cache lost data); the prices the source goes on from.

        The lease is renewed first: one found already ours (a term that ended on an error)
        may be about to expire, and the term's own renewals start only after this."""
        if not await self.lease.renew(self._status(), heartbeat=False):
            raise LeaseLost(f"{self.keys.lease} is no longer held by {self.lease.owner_id}")
        await prune_cache(self.redis, self.keys, tickers)
        cached = await self._cached(tickers)
        logged = await logged_ids(log_ids_script(self.redis), self.keys, self._history_len)
        floor = before.seq_top if before is not None else 0
        self.publisher.begin(tickers, cached, logged, seq_floor=floor)
        await self.publisher.restore_bars(tickers)
        earlier = before.last_prices() if before is not None else {}
        wanted = set(tickers)
        return {**{t: p for t, p in earlier.items() if t in wanted},
                **{t: u.price for t, u in cached.items()}}

    def start(self) -> None:
        """Run the term in its task: renew the lease until it ends."""
        self.task = asyncio.create_task(self._run(), name=f"partition-{self.index}")

    async def give_up(self) -> None:
        """End the term and delete the lease (another producer takes it at once)."""
        self._given_up.set()
        if self.task is not None:
            await asyncio.wait([self.task], timeout=2 * RELEASE_TIMEOUT_S + 1.0)
            await stop_tasks([self.task])

    def abort(self, error: BaseException) -> None:
        """End the term with ``error`` (a write for it failed outside the publisher)."""
        if not self._aborted.done():
            self._aborted.set_exception(error)

    async def add_ticker(self, ticker: str) -> None:
        """Publish ``ticker`` too, from its cached update; a Redis error ends the term."""
        try:
            cached = (await self._cached([ticker])).get(ticker)
            await self.publisher.add_ticker(ticker, cached)
        except FAILURES as e:
            self.abort(e)

    async def remove_ticker(self, ticker: str) -> None:
        """Stop publishing ``ticker`` and delete it from the cache; an error ends the term."""
        try:
            await self.publisher.remove_ticker(ticker)
        except FAILURES as e:
            self.abort(e)

    async def write_backfill(self, ticker: str, bars: Sequence[Bar]) -> int:
        """Backfilled 1 min bars of ``ticker`` (`Publisher.write_backfill`); an error ends
        the term and adds nothing."""
        try:
            return await self.publisher.write_backfill(ticker, bars)
        except FAILURES as e:
            self.abort(e)
            return 0

    async def _run(self) -> None:
        try:
            # Shielded: `race` cancels what it stops, and a cancelled `failure` would make
            # `flush_bars` think the term failed and skip the forming bars.
            await race(self.lease.keep(self._status, self.publisher.landed),
                       asyncio.shield(self.publisher.failure), self._aborted,
                       self._given_up.wait())
        finally:
            if self._given_up.is_set():  # a successor goes on from every update
                await self.publisher.flush_bars()
            await self.publisher.close()
            if not self._aborted.done():
                self._aborted.cancel()
            if self._given_up.is_set():
                await self._release()

    async def _cached(self, tickers: Sequence[str]) -> dict[str, PriceUpdate]:
        return await read_latest(self.redis, self.keys, list(tickers))

    async def _release(self) -> None:
        """Delete the lease, within `RELEASE_TIMEOUT_S` (a stop must not hang on Redis)."""
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await self.lease.release()
        except (*FAILURES, TimeoutError) as e:
            log.debug("could not release the lease of partition %d: %s", self.index, e)


def end_reason(error: BaseException | None) -> str:
    """Why a term ended, for a log line."""
    if error is None:
        return "ended"
    text = str(error).splitlines()[0][:120] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
