"""The gateway's HTTP/1.1 protocol: uvicorn's httptools protocol, guarded against abuse.

uvicorn with httptools has no limit on a request's head and no deadline for reading a
request (docs/RELIABILITY.md, "HTTP layer"): five connections sending 1 MiB header lines
took the gateway from 77 MB to 578 MB RSS, and half-sent requests held their sockets, and
an asyncio task each, for ever. The subclass that `guarded_protocol` builds adds, per
server:

- a limit on the request head (request line and headers): 431, then the connection closes
  and its buffers are freed;
- a deadline for the head and another for the body, counted from their first byte (a
  slow drip gains nothing): 408 and close;
- a bound on connections still sending their request: past it, the oldest is closed;
- a bound on open connections below the file descriptor limit (5 %, at least 128, kept
  back): past it, new connections get 503 and ONE log line per 10 s says why.

HTTP/1.0 clients get a body of unknown length (an SSE stream) unframed, ending with the
connection, instead of HTTP/1.1's chunked framing, which HTTP/1.0 does not know.

All of it runs when a request arrives, nothing per response byte. A live stream's events
skip uvicorn's ``send``: the hub writes each shared chunk to the socket itself, through
the scope extension `STREAM_SOCKET` (gateway/stream/direct.py; the cost, measured, is in
docs/PERFORMANCE.md, "The direct path").
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from gateway.extensions import ON_DISCONNECT, STREAM_SOCKET
from gateway.headers import SECURITY_HEADERS
from gateway.waiting import LeanEvent
from shared.logs import LogThrottle

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one request may take before the gateway gives up on it."""

    # A browser's head is 0.5-2 KB, cookies included; nginx's default allows 32 KB.
    max_head_bytes: int = 32 * 1024
    head_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    # Connections still sending their request; each holds at most max_head_bytes.
    max_pending: int = 1024
    # Descriptors kept back for Redis (a pool of up to 32 and the subscription), files and
    # the process itself (~50 at rest, /metrics open_fds): refused by us, a connection
    # gets an answer and a log line; refused by the kernel, only a reset.
    min_fd_reserve: int = 128


class _Guard:
    """What every connection of one server shares."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.pending: dict[GuardedProtocol, None] = {}  # oldest first
        self.refused_log = LogThrottle(log, 10.0)
        self.evicted_log = LogThrottle(log, 10.0)
        self.large_log = LogThrottle(log, 10.0)
        self.slow_log = LogThrottle(log, 10.0)

    def max_open(self) -> tuple[int, int]:
        """The most connections to hold open, and the descriptor limit it comes from."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return sys.maxsize, soft
        reserve = max(self.limits.min_fd_reserve, soft // 20)
        return max(1, soft - reserve), soft


class _Phase:
    IDLE, HEAD, BODY = "idle", "head", "body"


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `guard`; see the module docstring."""

    guard: _Guard  # set on the subclass `guarded_protocol` makes
    # In slots, not the instance dict: uvicorn's protocol has 27 attributes already, and
    # three more took every connection's dict past CPython's shared-keys limit, from 296
    # to 1,584 bytes (docs/PERFORMANCE.md, "Memory per idle connection").
    __slots__ = ("_deadline", "_head_bytes", "_on_lost", "_phase")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _Phase.IDLE
        self._head_bytes = 0
        self._deadline: TimerHandle | None = None
        self._on_lost: Callable[[], None] | None = None
        # uvicorn's empty deque costs 760 bytes for each open connection; it only ever
        # appendlefts and pops a request that arrived while another was being answered.
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    # -- connection ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        writable = self.flow._is_writable_event = LeanEvent()  # waited on only when paused
        writable.set()
        limit, soft = self.guard.max_open()
        if len(self.connections) > limit:
            self.guard.refused_log.warning(
                "refusing new connections: %d open, near the file descriptor limit %d "
                "(raise `ulimit -n`, or lower PRICEFEED_MAX_CLIENTS)", len(self.connections), soft)
            self._respond_and_close(503, "the gateway is at its connection limit; retry shortly",
                                    (b"retry-after: 5\r\n",))
            return
        self._begin_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_request()
        super().connection_lost(exc)
        if self.cycle is not None:
            # The scope's extension is a bound method of this protocol, which holds the
            # cycle: left in place, every closed connection would be a reference cycle
            # freed only by a full GC (the churn test saw RSS grow 10 %).
            extensions = self.cycle.scope.get("extensions", {})
            extensions.pop(ON_DISCONNECT, None)
            extensions.pop(STREAM_SOCKET, None)
        if self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None
            on_lost()

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once when the connection is lost (None: no longer)."""
        self._on_lost = callback

    def stream_socket(self) -> tuple[asyncio.Transport, FlowControl] | None:
        """The socket and its flow control, for a response under way in chunked framing
        (gateway/stream/direct.py writes whole chunks to it); else None."""
        cycle = self.cycle
        if (cycle is None or not cycle.response_started or cycle.response_complete
                or not cycle.chunked_encoding or cycle.disconnected):
            return None
        return self.transport, self.flow

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._phase is _Phase.IDLE:
            self._begin_request()  # the next request of a keep-alive connection
        if self._phase is _Phase.HEAD:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._phase is _Phase.HEAD and self._head_bytes > self.guard.limits.max_head_bytes:
            limit = self.guard.limits.max_head_bytes
            self.guard.large_log.warning("refused a request whose headers passed %d bytes", limit)
            self._respond_and_close(431, f"request headers larger than {limit} bytes")

    # -- parser callbacks ---------------------------------------------------------------
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._phase is _Phase.HEAD:
            self._phase = _Phase.BODY  # until on_message_complete, at once when bodiless
            self._arm(self.guard.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._end_request()

    def handle_websocket_upgrade(self) -> None:
        self._end_request()  # the WebSocket protocol has its own handshake timeouts
        super().handle_websocket_upgrade()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        event = LeanEvent()  # `receive()` waits on it; a stream never calls receive()
        if cycle.message_event.is_set():
            event.set()
        cycle.message_event = event
        extensions: dict[str, Any] = {**cycle.scope.get("extensions", {}),
                                      ON_DISCONNECT: self.on_disconnect,
                                      STREAM_SOCKET: self.stream_socket}
        cycle.scope["extensions"] = extensions
        if cycle.scope["http_version"] == "1.0":
            # Only the send differs, and the cycle was made a line ago by uvicorn's
            # on_headers_complete (60 lines we would otherwise copy): switch its class.
            cycle.__class__ = CloseDelimitedCycle
        super()._start_asgi_task(cycle, app)

    # -- request phase ------------------------------------------------------------------
    def _begin_request(self) -> None:
        self._phase = _Phase.HEAD
        self._head_bytes = 0
        self._arm(self.guard.limits.head_timeout_s)
        pending = self.guard.pending
        pending[self] = None
        if len(pending) > self.guard.limits.max_pending:
            oldest = next(iter(pending))
            self.guard.evicted_log.warning(
                "%d connections were still sending their request: closed the oldest",
                len(pending))
            oldest._respond_and_close(503, "too many requests in progress; retry shortly",
                                      (b"retry-after: 1\r\n",))

    def _end_request(self) -> None:
        self._phase = _Phase.IDLE
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.guard.pending.pop(self, None)

    def _arm(self, timeout_s: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        self._deadline = None
        phase, sent = self._phase, self._head_bytes
        if phase is _Phase.HEAD and sent == 0:
            self._end_request()
            self.transport.close()  # opened, never used: nothing to answer
            return
        self.guard.slow_log.warning(
            "closed a connection that did not send its request %s in time", phase)
        self._respond_and_close(408, f"request {phase} not received in time")

    def _respond_and_close(self, status: int, detail: str, extra: tuple[bytes, ...] = ()) -> None:
        """Answer ``status`` with a JSON detail (unless a response began) and close."""
        self._end_request()
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            body = orjson.dumps({"detail": detail})
            head = [STATUS_LINE[status], b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body), b"connection: close\r\n", *extra]
            head += [b"%s: %s\r\n" % (name, value) for name, value in SECURITY_HEADERS]
            self.transport.write(b"".join([*head, b"\r\n", body]))
        if self.cycle is not None and not self.cycle.response_complete:
            # The app, if it still runs (a body it waits for), sees a disconnect and its
            # own answer goes nowhere.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


class CloseDelimitedCycle(RequestResponseCycle):
    """An HTTP/1.0 exchange: a body without Content-Length goes out as is and ends with
    the connection (RFC 9112 section 6.3), as HTTP/1.0 has no chunked framing."""

    _unframed = False

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            headers = list(message.get("headers", ()))
            if all(name.lower() != b"content-length" for name, _ in headers):
                self._unframed = True
                self.chunked_encoding = False
                self.keep_alive = False  # uvicorn then sends "connection: close" itself
                self.expected_content_length = sys.maxsize
                kept = [(name, value) for name, value in headers if name.lower() != b"connection"]
                message = {**message, "headers": kept}
        elif self._unframed and not message.get("more_body", False):
            self.expected_content_length = len(message.get("body", b""))  # the last part
        await super().send(message)


class _Pipeline(list[Any]):
    """The two operations uvicorn uses of its ``pipeline`` deque, on a list (56 bytes
    empty, not 760); it holds at most a few pipelined requests."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def guarded_protocol(limits: HttpLimits) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with its own shared state."""
    return type("GatewayHttpProtocol", (GuardedProtocol,), {"guard": _Guard(limits)})


# For uvicorn's own command line, `--http gateway.protocol:DefaultProtocol` (README,
# "Running several gateways"): the default limits, one guard per worker process.
DefaultProtocol: type[GuardedProtocol] = guarded_protocol(HttpLimits())
