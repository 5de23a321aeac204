"""The producer's life: take the lease, run a term, and start over after any loss.

A *term* lasts while this process holds the lease: it loads the watchlist and the cached
prices, runs the source into the publisher, renews the lease and follows the watchlist,
until the lease is lost, Redis fails or a stop is asked for. Then the source stops, and the
runner waits as a standby (lease held elsewhere) or retries Redis with capped backoff,
logging one line per change of state rather than one per retry (docs/RELIABILITY.md).
A term whose ticks landed was a success, so the backoff starts over after it: the first
retry after a blip comes within ~0.1 s, not after the delay earlier outages grew to.

Each attempt first checks that Redis runs scripts: every write is one, so a Redis that
refuses EVALSHA (``rename-command``, an ACL) stops the process with one line
(`ScriptingRefused`) instead of a retry loop that holds the lease and produces nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError, RedisError

from producer.backfills import backfill_for
from producer.lease import Lease, LeaseLost, new_owner_id
from producer.publisher import BarOptions, Publisher
from producer.resume import log_ids_script, logged_ids, prune_cache
from producer.scripts import check_scripting
from producer.sources.base import MarketDataSource
from producer.sources.factory import create_source
from producer.watchlist import Watchlist
from shared.backoff import Backoff
from shared.errors import PricefeedError
from shared.models import OUT_OF_MEMORY_STATE, PriceUpdate
from shared.redisio import read_latest
from shared.settings import Settings
from shared.tasks import race, stop_tasks

log = logging.getLogger(__name__)

STANDBY_POLL_S: Final[float] = 0.5
RELEASE_TIMEOUT_S: Final[float] = 0.5


class SourceConfigError(PricefeedError):
    """The configured price source refuses the settings; the process cannot produce."""


class ProducerRunner:
    """One producer process: the lease, the terms, the reconnects."""

    def __init__(
        self, settings: Settings, redis: aioredis.Redis, owner_id: str | None = None
    ) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.redis = redis
        self.owner_id = owner_id or new_owner_id()
        self.lease = Lease(redis, self.keys, self.owner_id)
        self._log_ids = log_ids_script(redis)
        self.publisher = Publisher(
            redis, self.keys, self.owner_id, settings.history_len, settings.history_s,
            bar_options(settings),
        )
        self.source: MarketDataSource | None = None
        self._last_tickers: list[str] | None = None  # None until a term has loaded them
        self._term_produced = False
        self._tickers_noted = False
        self._redis_ok: bool | None = None
        self._role = ""

    async def run(self, stop: asyncio.Event) -> None:
        """Produce (or stand by) until ``stop`` is set; then give the lease up."""
        backoff = Backoff(initial_s=0.1, cap_s=5.0)
        try:
            while not stop.is_set():
                try:
                    await self._attempt(stop)
                    backoff.reset()
                except LeaseLost as e:
                    log.warning("lost the lease (%s); standing by", e)
                    self._role = ""
                except (RedisError, OSError) as e:
                    self._redis_state(False, e)
                    await self._drop_connections()
                    if self._term_produced:
                        backoff.reset()
                    self._term_produced = False
                    delay = backoff.next_delay()
                    log.debug("Redis attempt failed (%s); next try in %.2f s",
                              type(e).__name__, delay)
                    await _wait(stop, delay)
        finally:
            await self._release()

    async def _attempt(self, stop: asyncio.Event) -> None:
        await check_scripting(self.redis)
        if not self._tickers_noted:
            await self._note_configured_tickers()
        if await self.lease.acquire():
            self._redis_state(True)
            self._announce("active", "holding the lease as %s; producing", self.owner_id)
            await self._term(stop)
        else:
            self._redis_state(True)
            self._announce("standby", "another producer holds the lease; standing by")
            await _wait(stop, STANDBY_POLL_S)

    async def _term(self, stop: asyncio.Event) -> None:
        watchlist = Watchlist(
            self.redis, self.keys, self.settings.tickers, self.settings.max_watchlist,
            self._add_ticker, self._remove_ticker,
        )
        tickers = await watchlist.load(fallback=self._last_tickers)
        await self._prune_cache(tickers)
        cached = await self._cached(tickers)
        self.publisher.begin(tickers, cached, await self._logged())
        await self.publisher.restore_bars(tickers)
        start_prices = {**self.publisher.last_prices(), **{t: u.price for t, u in cached.items()}}
        try:
            self.source = create_source(self.settings, self.publisher.publish)
        except ValueError as e:  # a source that cannot work with these settings
            raise SourceConfigError(str(e)) from e
        await self.source.start(tickers, {t: start_prices[t] for t in tickers if t in start_prices})
        try:
            await race(
                self.lease.keep(self.status, self.publisher.landed), watchlist.follow(),
                # Shielded: `race` cancels the losers, and a cancelled `failure` reads as a
                # failed term, so `flush_bars` below wrote nothing at a clean stop.
                asyncio.shield(self.publisher.failure), stop.wait(), self._backfill(tickers),
            )
        finally:
            self._last_tickers = list(watchlist.current)
            self._term_produced = self.publisher.landed.is_set()
            await self.source.stop()
            await self.publisher.flush_bars()
            await self.publisher.close()

    async def _backfill(self, tickers: list[str]) -> None:
        """With Massive's REST source and bars on: the last day of 1 min bars, once per
        term (docs/BARS.md "Backfill"); then nothing, until the term ends."""
        backfill = backfill_for(self.settings, self.source, self.publisher.write_backfill)
        if backfill is not None:
            await backfill.run(tickers)
        await asyncio.Event().wait()

    def status(self) -> dict[str, Any]:
        """What ``NS:producer:status`` shows besides the id and the time."""
        source = self.source
        state = source.state if source else "starting"
        return {
            "source": source.kind if source else None,
            "state": OUT_OF_MEMORY_STATE if self.publisher.out_of_memory else state,
            "tick_interval_s": self.settings.tick_interval_s,
            **(source.details() if source else {}),
        }

    async def _note_configured_tickers(self) -> None:
        """Say once, when Redis first answers, that a watchlist already in Redis wins over
        the configured tickers (a second producer's PRICEFEED_TICKERS is not used)."""
        members = {m.decode(errors="replace") if isinstance(m, bytes) else str(m)
                   for m in await self.redis.smembers(self.keys.watchlist)}
        self._tickers_noted = True
        if members and members != set(self.settings.tickers):
            log.info(
                "the configured tickers (PRICEFEED_TICKERS or the defaults) are not used: "
                "%s already holds %d tickers, and it is the watchlist (change it through "
                "the API); the configured ones only fill a new Redis",
                self.keys.watchlist, len(members),
            )

    async def _prune_cache(self, tickers: Iterable[str]) -> None:
        await prune_cache(self.redis, self.keys, tickers)

    async def _cached(self, tickers: Iterable[str]) -> dict[str, PriceUpdate]:
        """The cached updates of ``tickers``; a corrupt entry is logged and left out."""
        return await read_latest(self.redis, self.keys, list(tickers))

    async def _logged(self) -> list[tuple[int, int]]:
        return await logged_ids(self._log_ids, self.keys, self.settings.history_len)

    async def _add_ticker(self, ticker: str) -> None:
        cached = (await self._cached([ticker])).get(ticker)
        await self.publisher.add_ticker(ticker, cached)
        if self.source is not None:
            await self.source.add_ticker(ticker, cached.price if cached else None)

    async def _remove_ticker(self, ticker: str) -> None:
        if self.source is not None:
            await self.source.remove_ticker(ticker)
        await self.publisher.remove_ticker(ticker)

    def _redis_state(self, ok: bool, error: BaseException | None = None) -> None:
        if ok and self._redis_ok is False:
            log.info("Redis is reachable again")
        elif not ok and self._redis_ok is not False:
            if isinstance(error, OutOfMemoryError):
                log.warning("Redis is out of memory (%s); retrying with backoff", error)
            else:
                log.warning("Redis is unavailable (%s); retrying with backoff", error)
            self._role = ""
        self._redis_ok = ok

    def _announce(self, role: str, message: str, *args: object) -> None:
        if role != self._role:
            self._role = role
            log.info(message, *args)

    async def _drop_connections(self) -> None:
        """Close pooled connections: after an outage they are dead, and reusing one would
        fail once more and count as a second outage."""
        with contextlib.suppress(RedisError, OSError):
            await self.redis.connection_pool.disconnect()

    async def _release(self) -> None:
        """Give the lease up, within `RELEASE_TIMEOUT_S` (a stop must not hang on Redis)."""
        task = asyncio.ensure_future(self.lease.release())
        done, _ = await asyncio.wait([task], timeout=RELEASE_TIMEOUT_S)
        await stop_tasks([task])
        if done and not task.cancelled() and task.exception() is None and task.result():
            log.info("released the lease")


def bar_options(settings: Settings) -> BarOptions | None:
    """How the publisher keeps bars, or None when ``PRICEFEED_BARS=off``."""
    if not settings.bars_enabled:
        return None
    return BarOptions({"1s": settings.bars_1s_retention_s, "1m": settings.bars_1m_retention_s},
                      settings.bars_forming_interval_s)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
