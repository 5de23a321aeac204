"""Reads of the Redis cache (``NS:latest``, ``NS:seq``) shared by the stream and REST."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.hub import Item
from gateway.throttle import LogThrottle
from shared.codec import decode_update, encode_update
from shared.errors import CodecError
from shared.keys import Keys
from shared.models import PriceUpdate

log = logging.getLogger(__name__)
_bad_entry_log = LogThrottle(log, 10.0)


@dataclass(frozen=True, slots=True)
class CacheView:
    """The cache at one moment: valid updates by ticker, and the last seq handed out."""

    updates: dict[str, PriceUpdate]
    last_seq: int | None

    def items(self) -> dict[str, Item]:
        """The updates as hub items (seq, JSON bytes)."""
        return {t: (u.seq, encode_update(u)) for t, u in self.updates.items()}


async def read_cache(redis: aioredis.Redis, keys: Keys) -> CacheView:
    """``NS:latest`` and ``NS:seq`` in one round trip; malformed entries are skipped.

    Not a MULTI/EXEC: Redis refuses every transaction once ``maxmemory`` is reached under
    ``noeviction``, even one of reads, and these reads must go on working then
    (docs/RELIABILITY.md, "Redis faults, consistency and the watchlist"). Atomicity is
    not needed: ``NS:seq`` is read after the hash, and the producer reserves seqs before
    it writes them, so the seq read is never below a seq in the hash.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.latest)
        pipe.get(keys.seq)
        raw_latest, raw_seq = await pipe.execute()
    updates: dict[str, PriceUpdate] = {}
    for field, value in raw_latest.items():
        ticker = field.decode(errors="replace") if isinstance(field, bytes) else str(field)
        try:
            update = decode_update(value)
        except CodecError as e:
            _bad_entry_log.warning("skipping malformed cache entry %r: %s", ticker[:20], e)
            continue
        if update.ticker == ticker:
            updates[ticker] = update
    return CacheView(updates, _parse_seq(raw_seq))


async def read_one(redis: aioredis.Redis, keys: Keys, ticker: str) -> PriceUpdate | None:
    """The cached update of ``ticker``, or None when absent or malformed."""
    raw = await redis.hget(keys.latest, ticker)
    if raw is None:
        return None
    try:
        return decode_update(raw)
    except CodecError as e:
        _bad_entry_log.warning("malformed cache entry for %s: %s", ticker, e)
        return None


def _parse_seq(raw: bytes | str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None
