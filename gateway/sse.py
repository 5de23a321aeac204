"""The SSE response: sse-starlette's response and framing, with a lean per-connection life.

sse-starlette runs each stream as a task group of four tasks (stream, ping, disconnect,
shutdown) and arms a cancel-scope timer around every send. Measured (docs/PERFORMANCE.md)
(bench/gateway_bench.py and tracemalloc): ~53 KB of gateway memory per idle connection,
and a third of the per-event CPU under cProfile was the per-send timer. Here a stream
is ONE extra task (the disconnect listener) beside the request task:
- pings come from one `Pinger` task for every connection (the hub wakes idle clients);
- shutdown comes from the hub (`Hub.close` wakes every client, which ends its stream);
- the send timeout is one `SendWatchdog` task that cancels a stream whose send has been
  blocked past the timeout (each send only stamps its start time).
Framing stays sse-starlette's (`ServerSentEvent.encode`), as do the headers and HEAD.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncGenerator, Callable

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from gateway.hub import Client, Hub
from gateway.stats import Stats
from shared.logs import LogThrottle

log = logging.getLogger(__name__)
_dropped_log = LogThrottle(log, 10.0)
PING_FRAME = ServerSentEvent(comment="ping").encode()


class PriceStream(EventSourceResponse):
    """One client's SSE response; ends on disconnect, hub shutdown or a stuck send."""

    def __init__(
        self, content: AsyncGenerator[bytes, None], hub: Hub, client: Client, stats: Stats,
        watchdog: SendWatchdog,
    ) -> None:
        super().__init__(content, ping=0)
        self.hub, self.client, self.stats, self.watchdog = hub, client, stats, watchdog
        self.send_started = 0.0  # monotonic time of the send in progress; 0 when none
        self.timed_out = False
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["method"] == "HEAD":
                await super().__call__(scope, receive, send)  # headers only, no stream
            else:
                await self._stream(receive, send)
        finally:
            self.hub.unregister(self.client)
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
        if self.timed_out:
            self.stats.dropped_slow += 1
            _dropped_log.warning("dropped a client whose socket stayed blocked past the timeout")

    async def _stream(self, receive: Receive, send: Send) -> None:
        self._task = asyncio.current_task()
        listener = asyncio.create_task(self._listen(receive))
        self.watchdog.streams.add(self)
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await send(start)
            async for chunk in self.body_iterator:
                self.send_started = time.monotonic()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.send_started = 0.0
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self.timed_out or self._task is None:
                raise
            self._task.uncancel()  # our own abort: end quietly, the connection is closed
        finally:
            self.watchdog.streams.discard(self)
            listener.cancel()

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.client.closed = True
        self.client.wake.set()

    def abort(self) -> None:
        """End this stream now (its send is stuck); it counts as dropped."""
        if self._task is not None and not self.timed_out:
            self.timed_out = True
            self._task.cancel()


class UvicornNoise(logging.Filter):
    """Hides uvicorn's per-connection error for a client we dropped on purpose.

    An aborted stream ends its response unfinished, and uvicorn then logs one ERROR per
    such client; the gateway already counts drops and logs them throttled.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def quiet_uvicorn_drops() -> None:
    """Install `UvicornNoise` once on uvicorn's error logger."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, UvicornNoise) for f in logger.filters):
        logger.addFilter(UvicornNoise())


class SendWatchdog:
    """Cancels streams whose send stayed blocked longer than ``timeout_s``."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self.streams: set[PriceStream] = set()

    def sweep(self) -> int:
        """Abort every stuck stream; how many."""
        limit = self.clock() - self.timeout_s
        stuck = [s for s in self.streams if 0.0 < s.send_started < limit]
        for stream in stuck:
            stream.abort()
        return len(stuck)

    async def run(self) -> None:
        """Sweep forever, a few times per timeout."""
        interval = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            self.sweep()


def _uvicorn_exiting() -> bool:
    """True once the uvicorn server running this process was asked to exit.

    uvicorn installs its bound ``handle_exit`` as the SIGTERM handler; sse-starlette finds
    the server the same way. This covers the app under a plain ``uvicorn``
    (pricefeed/asgi.py), where `gateway.server.GatewayServer` is not there to close the hub
    first.
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


async def close_on_exit(hub: Hub, poll_s: float = 0.1) -> None:
    """End every stream as soon as the server starts shutting down."""
    while True:
        await asyncio.sleep(poll_s)
        if _uvicorn_exiting():
            hub.close()


async def ping_forever(hub: Hub, interval_s: float) -> None:
    """Wake clients that sent nothing for ``interval_s`` so they send a comment ping."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s / 4)
        hub.ping_idle(loop.time() - interval_s)
