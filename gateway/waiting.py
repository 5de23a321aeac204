"""Events that cost an idle stream less memory than `asyncio.Event`.

An `asyncio.Event` makes a deque for its waiters when it is created: 760 bytes with its
first block (tracemalloc), for each of the four events an idle SSE connection held, while
each has at most one waiter, or none (docs/PERFORMANCE.md, "Memory per idle connection").

- `Wakeup`: a stream's own wake-up: only the stream's task waits on it, so it keeps one
  future, and only while that task waits.
- `LeanEvent`: a drop-in `asyncio.Event` whose deque exists only while someone waits, for
  the events uvicorn makes per connection (`gateway.protocol` swaps them in).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any


class Wakeup:
    """An event for ONE waiter at a time: `set`, `clear`, `is_set` and `wait` as
    `asyncio.Event` has them; a second concurrent waiter is a bug (RuntimeError)."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        """Until set (at once if it is); True, as `asyncio.Event.wait`."""
        if self._set:
            return True
        if self._waiter is not None:
            raise RuntimeError("a Wakeup has one waiter at a time")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        return True


class LeanEvent(asyncio.Event):
    """`asyncio.Event` with its waiters' deque made on the first wait and dropped when the
    last waiter leaves. Overrides every method of Python 3.11's Event that reads the
    deque (tests/gateway/test_waiting.py checks the behaviour against asyncio's)."""

    def __init__(self) -> None:  # no super().__init__: it would make the deque
        self._value = False
        self._waiters: collections.deque[asyncio.Future[Any]] | None = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        state = "set" if self._value else "unset"
        return f"<{type(self).__name__} [{state}, waiters:{len(self._waiters or ())}]>"

    def set(self) -> None:
        if not self._value:
            self._value = True
            for fut in self._waiters or ():
                if not fut.done():
                    fut.set_result(True)

    async def wait(self) -> bool:  # type: ignore[override]  # the same contract
        if self._value:
            return True
        if self._waiters is None:
            self._waiters = collections.deque()
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
            return True
        finally:
            self._waiters.remove(fut)
            if not self._waiters:
                self._waiters = None
