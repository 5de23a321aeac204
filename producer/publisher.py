"""The publisher: turns a source's quotes into PriceUpdates and writes each tick atomically.

A tick is two calls: a seq block reserved in ``NS:seq``, then ONE script that checks the
lease is still ours, writes every update into ``NS:latest`` and publishes it on its
channel and the tick map on ``NS:prices`` (issue 2, point 5). The publisher owns
``previous_price`` and ``seq``; sources only hand it ``{ticker: Quote}``.

`publish` is the sources' sink and never raises: a Redis error or a lost lease is stored
in `failure`, which the runner awaits to end the term; later batches are dropped until the
next `begin`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.encoding import encode_tick
from producer.lease import LeaseLost
from producer.scripts import PUBLISH_TICK, RESERVE_SEQ, Script
from producer.source import Quote
from shared.codec import encode_update
from shared.keys import Keys
from shared.models import PriceUpdate

log = logging.getLogger(__name__)

MAX_TIMESTAMP = 1e11  # the codec's bound on Unix seconds


class Publisher:
    """Writes ticks into Redis for the lease owner ``owner_id``."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, owner_id: str) -> None:
        self.redis = redis
        self.keys = keys
        self.owner_id = owner_id
        self._reserve = Script(redis, RESERVE_SEQ)
        self._write = Script(redis, PUBLISH_TICK)
        self._lock = asyncio.Lock()
        self._allowed: set[str] = set()
        self._previous: dict[str, float] = {}
        self._payloads: dict[str, bytes] = {}  # the last payload per ticker, to rewrite the cache
        self._seq_floor = 0
        self._rewrite = False
        self._invalid_logged: set[str] = set()
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failure.set_result(None)  # no term yet: nothing is published
        self.ticks = 0

    def begin(self, tickers: Iterable[str], cached: Mapping[str, PriceUpdate]) -> None:
        """Start a term: publish ``tickers``, continuing from ``cached`` (from ``NS:latest``).

        The first tick also rewrites the cache with every ticker's latest payload, so a
        Redis that lost its data is complete again.
        """
        self._allowed = set(tickers)
        for ticker, update in cached.items():
            self._previous[ticker] = update.price
            self._payloads[ticker] = encode_update(update)
            self._seq_floor = max(self._seq_floor, update.seq)
        self._forget(set(self._previous) - self._allowed)
        self._rewrite = True
        self.failure = asyncio.get_running_loop().create_future()

    def last_prices(self) -> dict[str, float]:
        """The last price published per ticker (to continue from when the cache is empty)."""
        return dict(self._previous)

    async def add_ticker(self, ticker: str, cached: PriceUpdate | None = None) -> None:
        """Publish ``ticker`` from now on, continuing from its ``cached`` update if any."""
        async with self._lock:
            self._allowed.add(ticker)
            if cached is not None:
                self._previous[ticker] = cached.price
                self._payloads[ticker] = encode_update(cached)

    async def remove_ticker(self, ticker: str) -> None:
        """Never publish ``ticker`` again (until added) and delete it from the cache.

        Under the write lock, so a tick in flight cannot write it back after the HDEL.
        """
        async with self._lock:
            self._allowed.discard(ticker)
            self._forget({ticker})
            await self.redis.hdel(self.keys.latest, ticker)

    async def publish(self, quotes: Mapping[str, Quote]) -> None:
        """The sink: write one batch as one tick; errors go to `failure`, never raised."""
        if self.failure.done():
            return
        try:
            async with self._lock:
                await self._publish(quotes)
        except (RedisError, OSError, LeaseLost) as e:
            if not self.failure.done():
                self.failure.set_exception(e)

    async def _publish(self, quotes: Mapping[str, Quote]) -> None:
        tickers, prices, stamps = self._accept(quotes)
        if not tickers and not self._rewrite:
            return
        n = len(tickers)
        last = int(await self._reserve(keys=[self.keys.seq], args=[n, self._seq_floor]))
        prev = self._previous
        listed = prices.tolist()
        previous = np.array([prev.get(t, p) for t, p in zip(tickers, listed, strict=True)])
        payloads = encode_tick(tickers, prices, previous, stamps, last - n + 1)
        keys = self.keys
        pairs: list[str | bytes | int] = [self.owner_id, keys.price_prefix, keys.prices, n]
        pairs += [x for pair in zip(tickers, payloads, strict=True) for x in pair]
        if self._rewrite:
            pairs += [x for t, p in self._payloads.items() if t not in quotes for x in (t, p)]
        if not await self._write(keys=[self.keys.producer, self.keys.latest], args=pairs):
            raise LeaseLost(f"{self.keys.producer} is no longer held by {self.owner_id}")
        self._seq_floor = last
        self._rewrite = False
        prev.update(zip(tickers, listed, strict=True))
        self._payloads.update(zip(tickers, payloads, strict=True))
        self.ticks += 1

    def _accept(self, quotes: Mapping[str, Quote]) -> tuple[list[str], np.ndarray, list[float]]:
        """The batch's watched tickers with a usable price (rounded to cents) and timestamp."""
        allowed = self._allowed
        tickers = [t for t in quotes if t in allowed]
        values = [quotes[t] for t in tickers]
        prices = np.round(np.array([q.price for q in values], dtype=float), 2)
        stamps = np.array([q.timestamp for q in values], dtype=float)
        # NaN fails every comparison, so it is dropped too.
        good = (prices > 0) & (prices < math.inf) & (stamps >= 0) & (stamps < MAX_TIMESTAMP)
        if not good.all():
            self._log_invalid({t for t, ok in zip(tickers, good.tolist(), strict=True) if not ok})
            keep = np.flatnonzero(good)
            tickers = [tickers[i] for i in keep.tolist()]
            prices, stamps = prices[keep], stamps[keep]
        return tickers, prices, stamps.tolist()

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
