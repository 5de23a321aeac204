"""Background tasks for both services: stopped for sure, raced, and supervised.

A cancellation can be swallowed by a library the task awaits: the task then runs on, and
awaiting it hangs shutdown. We saw it happen to a producer stopped under load; the cause
we measured is redis-py's send under Python 3.11's ``wait_for`` (our clients no longer
use it: shared/redisio/connections.py), but a client built elsewhere still can. So every
stop here cancels again until the task has ended, and gives up after a deadline with one
log line naming what it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from shared.backoff import Backoff

log = logging.getLogger(__name__)

RECANCEL_INTERVAL_S: Final[float] = 0.05


async def stop_tasks(tasks: Iterable[asyncio.Future[Any]], timeout_s: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until all have ended (re-cancelling), at most ``timeout_s``."""
    tasks = list(tasks)
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


async def race(*aws: Awaitable[Any]) -> None:
    """Run ``aws`` until the first one ends; stop the rest; re-raise the first's error."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await stop_tasks(tasks)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


class Supervisor:
    """Runs named forever-tasks; one that raises is logged with its traceback and restarted.

    Use as ``async with Supervisor() as sup: sup.start("name", factory)``; leaving the
    block stops every task with `stop_tasks`, waiting at most ``stop_timeout_s``.
    """

    def __init__(self, restart_cap_s: float = 5.0, stop_timeout_s: float = 5.0) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._restart_cap_s = restart_cap_s
        self._stop_timeout_s = stop_timeout_s
        self.restarts = 0

    @property
    def running(self) -> int:
        """How many supervised tasks are alive."""
        return sum(not t.done() for t in self._tasks.values())

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` under supervision as ``name``."""
        self._tasks[name] = asyncio.create_task(self._keep(name, factory), name=name)

    async def _keep(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(initial_s=0.2, cap_s=self._restart_cap_s)
        while True:
            try:
                await factory()
                log.error("background task %s returned; restarting it", name)
            except Exception:
                log.exception("background task %s died; restarting it", name)
            self.restarts += 1
            await asyncio.sleep(backoff.next_delay())

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_tasks(self._tasks.values(), self._stop_timeout_s)
        self._tasks.clear()


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
