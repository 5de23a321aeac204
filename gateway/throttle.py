"""Log a recurring problem at most once per interval, with the count of what was muted."""

from __future__ import annotations

import logging
import time


class LogThrottle:
    """One line per ``interval_s`` for a problem that may repeat thousands of times."""

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
