"""Stopping background tasks for sure, within a bounded time.

A cancellation that lands exactly while a redis-py read's own timeout expires can be
swallowed (Python 3.11's ``asyncio.timeout``; see redis/redis-py#2551): the task then runs
on, and awaiting it hangs shutdown. We saw it happen to a producer stopped under load, so
every stop here cancels again until the task has ended, and gives up after a deadline
with one log line naming what it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Final

log = logging.getLogger(__name__)

RECANCEL_INTERVAL_S: Final[float] = 0.05


async def stop_tasks(tasks: Iterable[asyncio.Future[Any]], timeout_s: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until all have ended (re-cancelling), at most ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("gave up waiting for %s to stop", ", ".join(_name(t) for t in pending))
            return
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_INTERVAL_S, remaining))
    for task in tasks:  # mark errors raised while stopping as seen: the cause was reported
        if task.done() and not task.cancelled():
            with contextlib.suppress(BaseException):
                task.exception()


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
