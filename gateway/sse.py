"""The SSE response: sse-starlette's framing, pings and task race; a cheaper send timeout.

sse-starlette wraps every send in its own anyio cancel scope (``send_timeout``): a timer
armed and disarmed per event, about a third of the gateway's CPU per event at 3,000
clients x 10 Hz (cProfile, issue 3 benchmark). Here each stream holds ONE cancel scope
for its life and stamps the time a send started; a single `SendWatchdog` task sweeps the
open streams and cancels any whose send has been blocked past the timeout. Same bound on
a stuck client (timeout + one sweep interval), a fraction of the cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from gateway.stats import Stats
from gateway.throttle import LogThrottle

log = logging.getLogger(__name__)
_dropped_log = LogThrottle(log, 10.0)
_PING = ServerSentEvent(comment="ping")


class PriceStream(EventSourceResponse):
    """One client's SSE response, registered with the watchdog while it streams."""

    def __init__(
        self, content: AsyncIterator[bytes], stats: Stats, watchdog: SendWatchdog, ping_s: float
    ) -> None:
        super().__init__(content, ping=ping_s, ping_message_factory=lambda: _PING)
        self.stats = stats
        self.watchdog = watchdog
        self.send_started = 0.0  # monotonic time of the send in progress; 0 when none
        self._scope: anyio.CancelScope | None = None
        self.timed_out = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.watchdog.streams.add(self)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.watchdog.streams.discard(self)
        if self.timed_out:
            self.stats.dropped_slow += 1
            _dropped_log.warning("dropped a client whose socket stayed blocked past the timeout")

    async def _stream_response(self, send: Send) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            await super()._stream_response(send)

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        self.send_started = time.monotonic()
        try:
            await send(message)
        finally:
            self.send_started = 0.0

    def abort(self) -> None:
        """End this stream now (its send is stuck); it counts as dropped."""
        if self._scope is not None and not self.timed_out:
            self.timed_out = True
            self._scope.cancel()


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
