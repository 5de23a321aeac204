"""Gateway test helpers: the real app served in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.protocol import HttpLimits, guarded_protocol
from gateway.server import GatewayServer, bind
from shared.settings import Settings
from tests.helpers.poll import wait_until


@contextlib.asynccontextmanager
async def served(settings: Settings, guarded: bool = True
                 ) -> AsyncIterator[tuple[str, FastAPI]]:
    """The real app under uvicorn in this event loop, on a free port; stopped at exit.
    ``guarded``: with the protocol `pricefeed gateway` runs (gateway/protocol.py), else
    uvicorn's own (as `uvicorn pricefeed.asgi:app` would)."""
    app = create_app(settings)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    http = guarded_protocol(HttpLimits()) if guarded else "auto"
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=1,
                            http=http)
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
