"""Background tasks that are never lost: kept, restarted when they die, cancelled at exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from shared.backoff import Backoff

log = logging.getLogger(__name__)


class Supervisor:
    """Runs named forever-tasks; one that raises is logged with its traceback and restarted.

    Use as ``async with Supervisor() as sup: sup.start("name", factory)``; leaving the
    block cancels every task and waits for it.
    """

    def __init__(self, restart_cap_s: float = 5.0) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._restart_cap_s = restart_cap_s
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
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
