"""Reads of the Redis cache (``NS:latest``, ``NS:seq``) and of the tick log's span, shared by
the stream and REST."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import OutOfMemoryError

from gateway.hub import NO_EPOCH
from gateway.updates import EncodedUpdate
from shared.codec import encode_update
from shared.errors import CodecError
from shared.keys import Keys
from shared.models import PriceUpdate
from shared.redisio import decode_latest
from shared.ticklog import parse_entry_id


@dataclass(frozen=True, slots=True)
class CacheView:
    """The cache at one moment: valid updates by ticker, and the last seq handed out."""

    updates: dict[str, PriceUpdate]
    last_seq: int | None

    def items(self) -> dict[str, EncodedUpdate]:
        """The updates as the hub holds them (seq, JSON bytes)."""
        return {t: EncodedUpdate(u.seq, encode_update(u)) for t, u in self.updates.items()}


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
    return CacheView(decode_latest(raw_latest.items()), _parse_seq(raw_seq))


def _parse_seq(raw: bytes | str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


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


async def read_together(redis: aioredis.Redis, queue: Callable[[Pipeline], object]) -> list[Any]:
    """The replies of the reads ``queue`` adds to a pipeline, in one MULTI/EXEC so that
    nothing lands between them.

    Under ``maxmemory`` with ``noeviction`` Redis refuses every transaction, even one of
    reads, and reads must go on working then (docs/RELIABILITY.md, "Redis faults,
    consistency and the watchlist"). It refuses every write too, so nothing can land
    between the reads anyway: a plain pipeline gives the same answer.
    """
    try:
        async with redis.pipeline(transaction=True) as pipe:
            queue(pipe)
            return list(await pipe.execute())
    except OutOfMemoryError:
        async with redis.pipeline(transaction=False) as pipe:
            queue(pipe)
            return list(await pipe.execute())


async def read_view(redis: aioredis.Redis, keys: Keys) -> StreamView:
    """The `StreamView` in one MULTI/EXEC: nothing lands in between, and only reads, so a
    gateway whose Redis user may not write or run scripts can do it (docs/REDIS.md)."""
    def queue(pipe: Pipeline) -> None:
        pipe.get(keys.epoch)
        pipe.xrange(keys.ticks, count=1)
        pipe.xrevrange(keys.ticks, count=1)
        pipe.get(keys.seq)
        pipe.hgetall(keys.latest)

    epoch, first, last, raw_seq, raw_latest = await read_together(redis, queue)
    cache = CacheView(decode_latest(raw_latest.items()), _parse_seq(raw_seq))
    first_seq = _entry_seq(first[0][0]) if first else 0
    top = (_entry_seq(last[0][0]) if last else 0) or max(
        (u.seq for u in cache.updates.values()), default=0)
    return StreamView(cache, epoch_text(epoch), first_seq, top)


def epoch_text(raw: bytes | str | None) -> str:
    """``NS:epoch`` as text; `NO_EPOCH` when there is none yet."""
    if raw is None:
        return NO_EPOCH
    return raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw


def _entry_seq(raw: bytes | str) -> int:
    if not raw:
        return 0
    try:
        return parse_entry_id(raw)[0]
    except CodecError:
        return 0
