"""Reads of the bars in Redis (README "Bars"), shared by the REST route and the SSE feed."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gateway.reads import read_together
from shared.bars import decode_bar, with_partial
from shared.errors import CodecError
from shared.keys import Keys
from shared.logs import LogThrottle

log = logging.getLogger(__name__)
_bad_bar_log = LogThrottle(log, 10.0)

MAX_LIMIT = 5000
"""Most bars one ``GET /api/bars`` returns (the default retention holds 3,600 1 s bars)."""


def checked(raw: bytes, what: str) -> tuple[int, bytes] | None:
    """``(start, raw)`` of a valid stored bar; None (logged, throttled) when malformed."""
    try:
        return decode_bar(raw).t, raw
    except CodecError as e:
        _bad_bar_log.warning("skipping a malformed bar of %s: %s", what, e)
        return None


async def read_bars(redis: aioredis.Redis, keys: Keys, ticker: str, interval: str, limit: int,
                    since: float | None, watched: bool | None = None) -> list[bytes] | None:
    """Up to ``limit`` bars of ``ticker``, oldest first, the forming one last (with
    ``"partial"``); the newest ones, or the oldest from ``since`` on. None when the ticker
    is neither watched nor has bars. ``watched`` is read with the bars unless given (on a
    Cluster the watchlist lives in another slot than the bars, docs/CLUSTER.md)."""
    key = keys.bars(interval, ticker)
    known = watched

    def queue(pipe: Pipeline) -> None:
        if since is None:
            pipe.zrange(key, -limit, -1)
        else:
            pipe.zrangebyscore(key, math.ceil(since), "+inf", start=0, num=limit)
        pipe.hget(keys.forming(interval), ticker)
        if known is None:
            pipe.sismember(keys.watchlist, ticker)

    members, forming_raw, *rest = await read_together(redis, queue)
    watched = bool(rest[0]) if known is None else known
    closed = [c for c in (checked(m, ticker) for m in members) if c is not None]
    forming = checked(forming_raw, ticker) if forming_raw is not None else None
    if not closed and forming is None and not watched:
        return None
    out = [with_partial(raw, False) for _, raw in closed]
    newest = closed[-1][0] if closed else -1
    if forming is not None and forming[0] > newest and (since is None or forming[0] >= since):
        out.append(with_partial(forming[1], True))
    return out[-limit:] if since is None else out[:limit]


def bars_body(ticker: str, interval: str, bars: Iterable[bytes]) -> bytes:
    """The JSON answer ``{"ticker", "interval", "bars": [...]}`` from encoded bars."""
    return b'{"ticker":"%b","interval":"%b","bars":[%b]}' % (
        ticker.encode(), interval.encode(), b",".join(bars))
