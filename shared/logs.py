"""One log format for every pricefeed process."""

from __future__ import annotations

import logging
import sys
import time


def configure(level: str = "INFO") -> None:
    """Log to stderr, one line per record, with the process role in the logger name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class LogThrottle:
    """One line per ``interval_s`` for a problem that may repeat thousands of times,
    with the count of the lines muted since the last one."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._next_at = 0.0
        self._muted = 0

    def warning(self, msg: str, *args: object) -> None:
        """Log now unless a line went out less than ``interval_s`` ago."""
        now = time.monotonic()
        if now < self._next_at:
            self._muted += 1
            return
        if self._muted:
            msg += " (%d similar suppressed)"
            args = (*args, self._muted)
        self._muted = 0
        self._next_at = now + self.interval_s
        self.logger.warning(msg, *args)
