"""The SSE response: the headers and the send loop of one stream, owned outright.

sse-starlette's `EventSourceResponse` runs each stream as a task group of four tasks
(stream, ping, disconnect, shutdown) and arms a cancel-scope timer around every send.
Measured (docs/PERFORMANCE.md) (bench/gateway_bench.py and tracemalloc): ~53 KB of gateway
memory per idle connection, and a third of the per-event CPU under cProfile was the
per-send timer. So the gateway owns its response, and a stream is ONE extra task (the
disconnect listener) beside the request task:
- pings come from one task for every connection (`gateway.stream.liveness`; the hub wakes
  idle clients);
- shutdown comes from the hub (`gateway.stream.shutdown` closes it, which wakes every
  client and ends its stream);
- the send timeout is one `SendWatchdog` task that cancels a stream whose send has been
  blocked past the timeout (each send only stamps its start time).
Live events mostly skip this loop: while it waits with nothing pending, the hub writes
them to the socket itself (`gateway.stream.direct`).
sse-starlette is used through its public API only: `ServerSentEvent` builds every frame
(`gateway.stream.framing`). The headers are the ones `EventSourceResponse` sends, plus the
security headers every other route gets from middleware (`gateway.headers`); HEAD gets
them with an empty body, as sse-starlette answers it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from gateway.extensions import ON_DISCONNECT, STREAM_SOCKET
from gateway.headers import SECURITY_HEADERS
from gateway.hub import Client, Hub, no_direct
from gateway.stats import Stats
from gateway.stream.direct import DirectWriter
from gateway.stream.framing import EXPIRED_FRAME
from shared.logs import LogThrottle

if TYPE_CHECKING:
    from gateway.stream.liveness import SendWatchdog

log = logging.getLogger(__name__)
_dropped_log = LogThrottle(log, 10.0)

# What sse-starlette's EventSourceResponse sends (its defaults, in its order), then ours.
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *SECURITY_HEADERS,
)


class PriceStream:
    """One client's SSE response: sends ``content`` until it ends, then the farewell
    (`event: expired` when the access token ran out); ends on disconnect, hub shutdown or
    a stuck send."""

    def __init__(
        self, content: AsyncGenerator[bytes, None], hub: Hub, client: Client, stats: Stats,
        watchdog: SendWatchdog,
    ) -> None:
        self.content = content
        self.hub, self.client, self.stats, self.watchdog = hub, client, stats, watchdog
        self.send_started = 0.0  # monotonic time of the send in progress; 0 when none
        self.timed_out = False
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # A list of its own: middleware (CORS) appends to the headers it is sent.
            start = {"type": "http.response.start", "status": 200, "headers": list(HEADERS)}
            await send(start)
            if scope["method"] == "HEAD":  # headers only: the stream never starts
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await self._stream(scope, receive, send)
        finally:
            self.hub.unregister(self.client)
            await self.content.aclose()
        if self.timed_out:
            self.stats.dropped_slow += 1
            _dropped_log.warning("dropped a client whose socket stayed blocked past the timeout")

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._task = asyncio.current_task()
        # Our server tells us of a disconnect itself; elsewhere (plain uvicorn, a test's
        # ASGI transport) a task waits in receive() for it, ~1.6 KB more per idle stream.
        on_disconnect = scope.get("extensions", {}).get(ON_DISCONNECT)
        listener = None
        if on_disconnect is not None:
            on_disconnect(self._disconnected)
        else:
            listener = asyncio.create_task(self._listen(receive))
        self.watchdog.streams.add(self)
        stream_socket = scope.get("extensions", {}).get(STREAM_SOCKET)
        socket = stream_socket() if stream_socket is not None else None
        if socket is not None:  # the hub may write live events itself (gateway/stream/direct.py)
            transport, flow = socket
            self.client.direct = DirectWriter(transport, flow, self.client, self.hub, self.stats)
        try:
            async for chunk in self.content:  # the hot path (docs/PERFORMANCE.md): kept bare
                self.send_started = time.monotonic()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.send_started = 0.0
                del chunk  # not kept while idle: the first one is the stream's own snapshot
            if self.client.expired:  # the farewell of a stream whose token ran out
                self.send_started = time.monotonic()
                await send({"type": "http.response.body", "body": EXPIRED_FRAME,
                            "more_body": True})
                self.send_started = 0.0
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self.timed_out or self._task is None:
                raise
            self._task.uncancel()  # our own abort: end quietly, the connection is closed
        finally:
            self.client.parked = False
            self.client.direct = no_direct  # and the writer's reference back to the client
            self.watchdog.streams.discard(self)
            if listener is not None:
                listener.cancel()
            if on_disconnect is not None:
                on_disconnect(None)

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._disconnected()

    def _disconnected(self) -> None:
        self.client.closed = True
        self.client.wake.set()

    def abort(self) -> None:
        """End this stream now (its send is stuck); it counts as dropped."""
        if self._task is not None and not self.timed_out:
            self.timed_out = True
            self._task.cancel()
