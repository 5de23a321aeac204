"""The reference price of each update's ``day_change_percent`` (README, "The Redis contract").

A source that knows the market's reference hands it over with each quote (Massive's
previous close). Otherwise the reference is the first price published for the ticker on
the UTC day of the tick, kept in ``NS:reference:<day>`` so that a restarted producer, or
one that takes the lease over, continues from the same reference instead of resetting
the day's change to zero.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import redis.asyncio as aioredis

from producer.lease import LeaseLost
from producer.scripts import SET_REFERENCES, Script
from producer.sources.base import PriceBatch, Quote
from shared.keys import Keys

log = logging.getLogger(__name__)

# A day's hash outlives the day by two, so a reader can still look at yesterday's.
REFERENCE_TTL_S: Final[int] = 3 * 86400


def utc_day(timestamp: float) -> str:
    """``YYYY-MM-DD`` of a Unix time in UTC."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


class DayReferences:
    """The reference price per ticker for the current UTC day, backed by Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, owner_id: str) -> None:
        self.keys = keys
        self.owner_id = owner_id
        self._store = Script(redis, SET_REFERENCES)
        self._day: str | None = None
        self._refs: dict[str, float] = {}
        # The last tick's tickers and references: the usual tick repeats them.
        self._tail: tuple[Sequence[str], np.ndarray] | None = None

    def reset(self) -> None:
        """Forget what is held (a new term reads Redis again)."""
        self._day, self._refs, self._tail = None, {}, None

    async def of(self, tickers: Sequence[str], prices: np.ndarray, stamps: Sequence[float],
                 quotes: Mapping[str, Quote]) -> np.ndarray:
        """The reference of each ticker of a tick (``prices`` are its rounded prices)."""
        if not tickers:
            return np.empty(0)
        day = utc_day(stamps[0])
        if day != self._day:
            self._day, self._refs, self._tail = day, {}, None
        given = None if isinstance(quotes, PriceBatch) else [quotes[t].reference for t in tickers]
        if given is not None and all(g is None for g in given):
            given = None
        tail = self._tail
        if given is None and tail is not None and (tail[0] is tickers or tail[0] == tickers):
            return tail[1]
        refs = self._refs
        own = given or [None] * len(tickers)
        missing = [(t, p) for t, p, g in zip(tickers, prices.tolist(), own, strict=True)
                   if g is None and t not in refs]
        if missing:
            await self._keep(day, missing)
        out = np.round(np.array([refs[t] if g is None else g
                                 for t, g in zip(tickers, own, strict=True)], dtype=float), 2)
        if given is None:
            self._tail = (tickers, out)
        return out

    async def _keep(self, day: str, first: list[tuple[str, float]]) -> None:
        """Store ``first`` prices unless the day already has one; hold what Redis keeps."""
        args: list[str | int | float] = [self.owner_id, REFERENCE_TTL_S]
        for ticker, price in first:
            args += [ticker, repr(round(price, 2))]
        stored = await self._store(keys=[self.keys.lease, self.keys.reference(day)],
                                   args=args)
        if stored is None:
            raise LeaseLost(f"{self.keys.lease} is no longer held by {self.owner_id}")
        for (ticker, price), raw in zip(first, stored, strict=True):
            self._refs[ticker] = _price(raw, ticker, price)


def _price(raw: bytes | str | None, ticker: str, fallback: float) -> float:
    """A stored reference; ``fallback`` (and one line) when it is not a positive number."""
    try:
        value = float(raw) if raw is not None else 0.0
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        log.warning("the stored reference price of %s is unusable; using %.2f", ticker, fallback)
        return fallback
    return value
