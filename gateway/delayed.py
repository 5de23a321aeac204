"""Delayed entitlements: prices as they were ``delay_s`` ago, read from the tick log.

A token with ``delay_s`` (docs/ACCESS.md) sees each update only once ``delay_s`` has
passed since the producer published it: the tick log ``NS:ticks`` keeps every tick with
its publish time (the ``ms`` of its id), so the state "as of now minus the delay" is the
cache where an update is old enough, and the log's older entries where it is not.
Nothing real-time reaches such a client: REST answers come from `state_at`, a stream
from `DelayedLog`, which holds at most `READ_AHEAD` entries per client.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gateway.bars import checked
from gateway.reads import read_cache, read_together
from gateway.updates import EncodedUpdate
from shared.bars import INTERVALS, with_partial
from shared.codec import encode_update
from shared.errors import CodecError
from shared.keys import Keys
from shared.logs import LogThrottle
from shared.ticklog import LogEntry, decode_entry

log = logging.getLogger(__name__)
_bad_entry_log = LogThrottle(log, 10.0)

READ_AHEAD: Final[int] = 100  # log entries one delayed stream reads (and holds) at a time
MAX_WALK: Final[int] = 4_000  # log entries read back for tickers the cache cannot answer
_PAGE: Final[int] = 64


def _entries(raw: Any) -> list[LogEntry]:
    out: list[LogEntry] = []
    for entry_id, fields in raw or ():
        try:
            out.append(decode_entry(entry_id, fields))
        except CodecError as e:
            _bad_entry_log.warning("skipping a malformed tick log entry: %s", e)
    return out


async def _first_from(redis: aioredis.Redis, keys: Keys, seq: int) -> LogEntry | None:
    found = _entries(await redis.xrange(keys.ticks, f"{seq}-0", "+", count=1))
    return found[0] if found else None


async def boundary(redis: aioredis.Redis, keys: Keys, cutoff_ms: int) -> LogEntry | None:
    """The last log entry published at or before ``cutoff_ms``; None when the log starts
    later. A binary search over seqs (ids are ``<seq>-<ms>`` and both grow together):
    about log2(seq range) one-entry reads, never the whole log."""
    first = _entries(await redis.xrange(keys.ticks, "-", "+", count=1))
    last = _entries(await redis.xrevrange(keys.ticks, "+", "-", count=1))
    if not first or not last or first[0].ms > cutoff_ms:
        return None
    low, high = first[0], last[0].seq + 1  # low.ms <= cutoff; every seq >= high is later
    if last[0].ms <= cutoff_ms:
        return last[0]
    while (mid := (low.seq + high) // 2) > low.seq:
        entry = await _first_from(redis, keys, mid)
        if entry is None or entry.seq >= high or entry.ms > cutoff_ms:
            high = mid
        else:
            low = entry
    return low


async def state_at(
    redis: aioredis.Redis, keys: Keys, cutoff_ms: int, wanted: frozenset[str] | None
) -> tuple[dict[str, EncodedUpdate], int | None]:
    """Every wanted ticker's update as of ``cutoff_ms``, and the log position it stands at
    (None: the log does not reach back that far, so nothing is known)."""
    edge = await boundary(redis, keys, cutoff_ms)
    if edge is None:
        return {}, None
    view = await read_cache(redis, keys)
    state: dict[str, EncodedUpdate] = {}
    missing: set[str] = set()
    for ticker, update in view.updates.items():
        if wanted is not None and ticker not in wanted:
            continue
        if update.seq <= edge.seq:  # published no later than the edge: still current then
            state[ticker] = EncodedUpdate(update.seq, encode_update(update))
        else:
            missing.add(ticker)
    start, read = edge.entry_id, 0
    while missing and read < MAX_WALK:
        page = _entries(await redis.xrevrange(keys.ticks, start, "-", count=_PAGE))
        if not page:
            break
        for entry in page:
            for ticker in missing & entry.updates.keys():
                update = entry.updates[ticker]
                state[ticker] = EncodedUpdate(update.seq, encode_update(update))
            missing -= entry.updates.keys()
        read += len(page)
        start = f"({page[-1].entry_id}"
    return state, edge.seq


class DelayedLog:
    """One delayed stream's reader: releases log entries once they are old enough."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, wanted: frozenset[str] | None,
                 delay_s: float, position: int) -> None:
        self.redis, self.keys, self.wanted = redis, keys, wanted
        self.delay_ms = int(delay_s * 1000)
        self.position = position  # the last seq released
        self.ahead: deque[LogEntry] = deque()

    async def release(self, now_ms: int) -> dict[str, EncodedUpdate]:
        """The wanted updates published up to ``now_ms - delay``, latest per ticker."""
        cutoff = now_ms - self.delay_ms
        if not self.ahead:
            raw = await self.redis.xrange(self.keys.ticks, f"{self.position + 1}-0", "+",
                                          count=READ_AHEAD)
            self.ahead.extend(e for e in _entries(raw) if e.seq > self.position)
        out: dict[str, EncodedUpdate] = {}
        while self.ahead and self.ahead[0].ms <= cutoff:
            entry = self.ahead.popleft()
            self.position = entry.seq
            for ticker, update in entry.updates.items():
                if self.wanted is None or ticker in self.wanted:
                    out[ticker] = EncodedUpdate(update.seq, encode_update(update))
        return out


async def bars_until(redis: aioredis.Redis, keys: Keys, ticker: str, interval: str,
                     limit: int, since: float | None, cutoff_s: float,
                     watched: bool | None = None) -> list[bytes] | None:
    """`gateway.bars.read_bars` for a delayed client: closed bars that ended by
    ``cutoff_s`` only (the forming bar is real time); None for an unknown ticker.
    ``watched`` is read with the bars unless given (a Cluster keeps the watchlist in
    another slot)."""
    key = keys.bars(interval, ticker)
    given = watched
    newest_start = math.floor(cutoff_s) - INTERVALS[interval]

    def queue(pipe: Pipeline) -> None:
        if since is None:
            pipe.zrevrangebyscore(key, newest_start, "-inf", start=0, num=limit)
        else:
            pipe.zrangebyscore(key, math.ceil(since), newest_start, start=0, num=limit)
        pipe.exists(key)
        if given is None:
            pipe.sismember(keys.watchlist, ticker)

    members, known, *rest = await read_together(redis, queue)
    watched = bool(rest[0]) if given is None else given
    if since is None:
        members = list(reversed(members))
    closed = [c for c in (checked(m, ticker) for m in members) if c is not None]
    if not closed and not known and not watched:
        return None
    return [with_partial(raw, False) for _, raw in closed]
