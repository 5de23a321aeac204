"""What the two baseline gateways share: the app shell, SSE framing, the seq of a payload.

The baselines exist to be beaten fairly, so each is written as well as its design allows:
payloads from Redis are passed through as bytes (never decoded into models and re-encoded),
events are framed by hand into the exact bytes sse-starlette would produce (JSON from Redis
holds no newline), and sse-starlette still runs the response (pings, disconnects). They serve
the same URL and the same SSE format as ours; the ``?tickers=`` filter and resume are not
implemented (the benchmark uses neither).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from sse_starlette import EventSourceResponse

from shared.settings import Settings, load_or_exit

RETRY = b"retry: 1000\r\n\r\n"
StreamFactory = Callable[[aioredis.Redis, Settings], AsyncIterator[bytes]]


def frame(seq: int, data: bytes) -> bytes:
    """One SSE event (``id`` + one ``data`` line), CRLF-separated as sse-starlette does."""
    return b"id: %d\r\ndata: %b\r\n\r\n" % (seq, data)


def map_seq(data: bytes) -> int | None:
    """The highest seq in a ``{TICKER: PriceUpdate}`` payload; None when malformed."""
    try:
        obj = orjson.loads(data)
        return max(int(u["seq"]) for u in obj.values())
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


def join_map(fields: Mapping[Any, Any]) -> bytes:
    """``{TICKER: PriceUpdate}`` JSON spliced from cache fields, without re-encoding them."""
    return b"{" + b",".join(b'"%b":%b' % (t, v) for t, v in fields.items()) + b"}"


def create_app(stream: StreamFactory, pool: Callable[[str], aioredis.ConnectionPool]) -> FastAPI:
    """A FastAPI app serving ``stream`` at the gateway's SSE URL, settings from the env."""
    settings = load_or_exit()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis(connection_pool=pool(settings.redis_url))
        app.state.redis = client
        try:
            yield
        finally:
            await client.aclose(close_connection_pool=True)

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/stream/prices")
    async def prices(request: Request) -> EventSourceResponse:
        return EventSourceResponse(
            stream(request.app.state.redis, settings), ping=settings.ping_interval_s
        )

    return app
