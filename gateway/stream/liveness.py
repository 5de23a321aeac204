"""Keep-alive pings and the send-timeout watchdog: one task each for every stream.

A stream that sent nothing for ``PRICEFEED_PING_INTERVAL`` gets a comment ping (proxies
close idle connections); a stream whose send stayed blocked past
``PRICEFEED_SEND_TIMEOUT`` is cut, and counted as dropped. One task for all streams
rather than two per stream: docs/PERFORMANCE.md (memory per idle connection).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.hub import Hub

if TYPE_CHECKING:
    from gateway.stream.response import PriceStream


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


async def ping_forever(hub: Hub, interval_s: float) -> None:
    """Wake clients that sent nothing for ``interval_s`` so they send a comment ping."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s / 4)
        hub.ping_idle(loop.time() - interval_s)
