"""The one way every stream ends when the gateway stops: `StreamShutdown.begin`.

It closes the hub, which wakes every client; each stream then sends its last chunk and
ends, so the server has no open response left to wait for (docs/RELIABILITY.md). Whichever
of these comes first calls it (the others find it done):

- `gateway.server.GatewayServer.shutdown` (``pricefeed gateway``), before uvicorn waits
  for connections;
- `StreamShutdown.watch_server_exit`, for the app under a plain ``uvicorn``
  (pricefeed/asgi.py), where no `GatewayServer` is there;
- the end of the app's lifespan, for any other ASGI server (and in-process tests).
"""

from __future__ import annotations

import asyncio
import signal

from starlette.applications import Starlette

from gateway.hub import Hub


class StreamShutdown:
    """Ends every stream, now and for every stream that opens from now on."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def begin(self) -> None:
        """End every stream now (idempotent); a stream that opens later ends at once."""
        self.hub.close()

    async def watch_server_exit(self, poll_s: float = 0.1) -> None:
        """`begin` as soon as the uvicorn server running this process starts to exit."""
        while True:
            await asyncio.sleep(poll_s)
            if _uvicorn_exiting():
                self.begin()


def shutdown_of(app: Starlette) -> StreamShutdown:
    """The `StreamShutdown` of an app made by `gateway.app.create_app`."""
    shutdown: StreamShutdown = app.state.stream_shutdown
    return shutdown


def _uvicorn_exiting() -> bool:
    """True once the uvicorn server running this process was asked to exit.

    uvicorn installs its bound ``handle_exit`` as the SIGTERM handler; sse-starlette finds
    the server the same way.
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))
