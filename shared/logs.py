"""One log format for every pricefeed process."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO") -> None:
    """Log to stderr, one line per record, with the process role in the logger name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
