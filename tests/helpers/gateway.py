"""Gateway test helpers: the real app served in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.server import GatewayServer, bind
from shared.settings import Settings
from tests.helpers.poll import wait_until


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
