"""Gateway test helpers: a contract-conformant publisher and an in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.server import GatewayServer, bind
from shared.codec import encode_map, encode_update
from shared.keys import Keys
from shared.models import PriceUpdate
from shared.settings import Settings
from shared.ticklog import new_epoch


class FakeProducer:
    """Writes ticks exactly as the wire contract says: the log entry, the cache and the
    publish in one MULTI, under the dataset's epoch (created if absent)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.prices: dict[str, float] = {}

    async def heartbeat(self, status: bytes | None = None) -> None:
        await self.redis.set(self.keys.producer, b"test-producer", ex=3)
        if status is not None:
            await self.redis.set(self.keys.producer_status, status, ex=3)

    async def tick(self, prices: Mapping[str, float]) -> dict[str, PriceUpdate]:
        """One tick: each ticker gets the next seq; returns the updates written."""
        last = await self.redis.incrby(self.keys.seq, len(prices))
        now = time.time()
        updates = {}
        for i, (ticker, price) in enumerate(prices.items()):
            seq = last - len(prices) + 1 + i
            updates[ticker] = PriceUpdate.create(ticker, price, self.prices.get(ticker), now, seq)
            self.prices[ticker] = updates[ticker].price
        tick_map = encode_map(updates.values())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.ticks, {"map": tick_map}, id=f"{last}-{int(now * 1000)}")
            pipe.set(self.keys.epoch, new_epoch(), nx=True)
            pipe.hset(self.keys.latest, mapping={t: encode_update(u) for t, u in updates.items()})
            pipe.publish(self.keys.prices, tick_map)
            await pipe.execute()
        return updates


async def wait_until(predicate, timeout_s: float = 5.0, what: str = "condition") -> None:
    """Await until ``predicate()`` is truthy (sync or async), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[str, FastAPI]]:
    """The real app under uvicorn in this event loop, on a free port; stopped at exit."""
    app = create_app(settings)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=1)
    server = GatewayServer(config, app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started or task.done(), what="in-process server")
        if task.done():
            task.result()
        await wait_until(lambda: app.state.gateway.price_feed.connected, what="subscription")
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await task
        sock.close()
