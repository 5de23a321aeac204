"""Baseline: one redis-py PubSub per SSE client (the usual tutorial design).

Every client subscribes to ``NS:prices`` on its own Redis connection, so Redis sends each
tick once per client and the gateway parses each copy on its own. Run like ours:

    uvicorn --factory bench.baseline_pubsub_gateway:create_app --loop uvloop --http httptools
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from fastapi import FastAPI

from bench.baseline_common import RETRY, frame, join_map, map_seq
from bench.baseline_common import create_app as _create_app
from shared.settings import Settings

MAX_CONNECTIONS = 1_000_000  # in effect unbounded: the OS's open-files limit binds first


async def client_stream(redis: aioredis.Redis, settings: Settings) -> AsyncIterator[bytes]:
    """Subscribe, send the cached snapshot, then pass every newer tick message through."""
    keys = settings.keys
    async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(keys.prices)  # before the snapshot, so no tick falls between
        yield RETRY
        snapshot = await redis.hgetall(keys.latest)
        last_seq = map_seq(join_map(snapshot)) or 0
        yield frame(last_seq, join_map(snapshot))
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            seq = map_seq(message["data"])
            if seq is not None and seq > last_seq:  # skip malformed and already-snapshotted
                last_seq = seq
                yield frame(seq, message["data"])


def create_app() -> FastAPI:
    """The app; the pool must hold a connection per subscriber (redis-py's default is 100)."""
    return _create_app(
        client_stream,
        lambda url: aioredis.ConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS),
    )
