"""The one polling helper: wait until a condition holds, failing the test with what was
awaited. Use it only where no event can be awaited (a process's output, another process's
Redis writes, a server's state); where the code under test offers an event, await that."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT_S = 10.0  # only a failing test waits this long


class _Deadline:
    def __init__(self, timeout_s: float, what: str) -> None:
        self.timeout_s, self.what = timeout_s, what
        self.at = time.monotonic() + timeout_s

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise AssertionError(f"timed out after {self.timeout_s}s waiting for {self.what}")


def wait_for(predicate: Callable[[], T], timeout_s: float = TIMEOUT_S,
             interval_s: float = 0.02, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value, and return it (blocking: for
    sync tests only)."""
    deadline = _Deadline(timeout_s, what)
    while True:
        value = predicate()
        if value:
            return value
        deadline.check()
        time.sleep(interval_s)


async def wait_until(predicate: Callable[[], T | Awaitable[T]], timeout_s: float = TIMEOUT_S,
                     what: str = "condition", interval_s: float = 0.01) -> T:
    """Await until ``predicate()`` (sync or async) is truthy, and return it, without
    blocking the event loop."""
    deadline = _Deadline(timeout_s, what)
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        deadline.check()
        await asyncio.sleep(interval_s)
