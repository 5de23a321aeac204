"""The one reader of ``NS:latest``, the cache of each ticker's latest update (README,
"The contract").

A malformed entry, or one filed under another ticker than its own, is left out (logged,
throttled) rather than failing the whole read: one bad field must not take every
snapshot down.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from redis.asyncio import Redis

from shared.codec import decode_update
from shared.errors import CodecError
from shared.keys import Keys
from shared.logs import LogThrottle
from shared.models import PriceUpdate

log = logging.getLogger(__name__)
_bad_entry_log = LogThrottle(log, 10.0)


def decode_latest(fields: Iterable[tuple[Any, Any]]) -> dict[str, PriceUpdate]:
    """The valid updates among ``(field, value)`` pairs of ``NS:latest`` (as HGETALL or
    HMGET return them; a None value is an absent field), keyed by ticker."""
    updates: dict[str, PriceUpdate] = {}
    for field, value in fields:
        if value is None:
            continue
        ticker = field.decode(errors="replace") if isinstance(field, bytes) else str(field)
        try:
            update = decode_update(value)
        except CodecError as e:
            _bad_entry_log.warning("skipping the corrupt cached price of %s: %s",
                                   ticker[:20], e)
            continue
        if update.ticker == ticker:
            updates[ticker] = update
    return updates


async def read_latest(redis: Redis, keys: Keys,
                      tickers: Collection[str] | None = None) -> dict[str, PriceUpdate]:
    """The cached update of each ticker (of ``tickers`` only, when given)."""
    if tickers is None:
        raw: dict[Any, Any] = await redis.hgetall(keys.latest)
        return decode_latest(raw.items())
    names = sorted(tickers)
    if not names:
        return {}
    values: list[Any] = await redis.hmget(keys.latest, names)
    return decode_latest(zip(names, values, strict=True))


async def read_latest_one(redis: Redis, keys: Keys, ticker: str) -> PriceUpdate | None:
    """The cached update of ``ticker``; None when absent or malformed."""
    raw = await redis.hget(keys.latest, ticker)
    return decode_latest([(ticker, raw)]).get(ticker)
