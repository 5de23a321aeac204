"""Reads of the Redis cache (``NS:latest``, ``NS:seq``) and of the tick log's span, shared by
the stream and REST."""

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
from shared.ticklog import new_epoch, parse_entry_id

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
    """``NS:latest`` and ``NS:seq`` in one round trip; malformed entries are skipped."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.latest)
        pipe.get(keys.seq)
        raw_latest, raw_seq = await pipe.execute()
    return CacheView(_decode_cache(raw_latest), _parse_seq(raw_seq))


def _decode_cache(raw_latest: dict[bytes, bytes]) -> dict[str, PriceUpdate]:
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
    return updates


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


# KEYS: latest, seq, epoch, ticks. ARGV: an epoch to create if the dataset has none.
# The cache, NS:seq, the epoch and the log's first and last positions at one moment (a
# script, so nothing lands in between); only the ids of the log's ends leave Redis.
_READ_VIEW = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  redis.call('SET', KEYS[3], ARGV[1])
  epoch = ARGV[1]
end
local first = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
return {epoch, first[1] and first[1][1] or '', last[1] and last[1][1] or '',
        redis.call('GET', KEYS[2]) or '', redis.call('HGETALL', KEYS[1])}
"""


@dataclass(frozen=True, slots=True)
class StreamView:
    """What a stream starts from: the cache, the epoch and the log's span at one moment.

    ``top`` is the position of the last tick (the log's last seq; with the log off or
    empty, the newest seq in the cache); ``first`` the log's first seq (0 when empty).
    """

    cache: CacheView
    epoch: str
    first: int
    top: int

    @property
    def updates(self) -> dict[str, PriceUpdate]:
        """The cached updates by ticker."""
        return self.cache.updates


async def read_view(redis: aioredis.Redis, keys: Keys) -> StreamView:
    """The `StreamView` in one script call (creating ``NS:epoch`` if there is none)."""
    reply = await redis.eval(_READ_VIEW, 4, keys.latest, keys.seq, keys.epoch, keys.ticks,
                             new_epoch())
    epoch, first_id, top_id, raw_seq, flat = reply
    cache = CacheView(_decode_cache(dict(zip(flat[::2], flat[1::2], strict=True))),
                      _parse_seq(raw_seq or None))
    first = _entry_seq(first_id)
    top = _entry_seq(top_id) or max((u.seq for u in cache.updates.values()), default=0)
    return StreamView(cache, _text(epoch), first, top)


def _entry_seq(raw: bytes | str) -> int:
    if not raw:
        return 0
    try:
        return parse_entry_id(raw)[0]
    except CodecError:
        return 0


def _text(raw: bytes | str) -> str:
    return raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
