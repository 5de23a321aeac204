"""Baseline: each SSE client reads the ``NS:latest`` cache every 0.5 s (the seed's design).

Per poll the client sends the tickers whose cached JSON changed since its last poll, so it
delivers at most 2 events/s with 0-500 ms of built-in latency. Polls share a bounded pool
of Redis connections and keep a fixed schedule (no drift). Run like ours:

    uvicorn --factory bench.baseline_polling_gateway:create_app --loop uvloop --http httptools
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI

from bench.baseline_common import RETRY, frame, join_map, map_seq
from bench.baseline_common import create_app as _create_app
from shared.settings import Settings

POLL_INTERVAL_S = 0.5
POOL_SIZE = 64  # enough to keep Redis busy; more only adds connections, not throughput


async def client_stream(redis: aioredis.Redis, settings: Settings) -> AsyncIterator[bytes]:
    """Poll the cache on a fixed schedule; send what changed since the last poll."""
    loop = asyncio.get_running_loop()
    sent: dict[Any, Any] = {}  # ticker -> the cached JSON last sent (bytes)
    first = True
    yield RETRY
    next_t = loop.time()
    while True:
        cache = await redis.hgetall(settings.keys.latest)
        changed = {t: v for t, v in cache.items() if sent.get(t) != v}
        seq = map_seq(join_map(changed)) if changed else None
        if seq is not None or first:  # the first event is the snapshot, even if empty
            first = False
            sent.update(changed)
            yield frame(seq or 0, join_map(changed))
        # A fixed schedule; a poll that ran late is not made up with a burst.
        next_t = max(next_t + POLL_INTERVAL_S, loop.time())
        await asyncio.sleep(next_t - loop.time())


def create_app() -> FastAPI:
    """The app, polls sharing a bounded pool (a poll waits for a free connection)."""
    return _create_app(
        client_stream,
        lambda url: aioredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=None
        ),
    )
