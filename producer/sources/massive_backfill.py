"""The last day of 1 min bars from Massive's aggregates endpoint, at start (docs/BARS.md
"Backfill"), and the calls-per-minute budget it shares with the snapshot poller.

The SDK's ``get_aggs`` is blocking: each call runs in a worker thread. Every call first
takes a place in the `CallBudget` (the free tier allows 5 calls a minute in all), and the
backfill says in the log when it has to wait for one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Protocol

from massive import RESTClient
from massive.rest.models import Agg

from producer.sources.massive_api import DEFAULT_BASE_URL, NoRetry, StatusError, classify
from shared.bars import Bar

log = logging.getLogger(__name__)

DAY_S: Final[int] = 86_400
RATE_LIMIT_WAIT_S: Final[float] = 60.0  # after a 429 without Retry-After


class CallBudget:
    """At most ``calls`` REST calls in any ``window_s`` (a sliding window)."""

    def __init__(self, calls: int, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.calls = calls
        self.window_s = window_s
        self.clock = clock
        self._made: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    def wait_s(self, leave: int = 0) -> float:
        """Seconds until a call may be made that leaves ``leave`` places free."""
        now = self.clock()
        while self._made and self._made[0] <= now - self.window_s:
            self._made.popleft()
        allowed = max(1, self.calls - leave)
        if len(self._made) < allowed:
            return 0.0
        return self._made[len(self._made) - allowed] + self.window_s - now

    def note(self) -> None:
        """Count a call made without waiting (the poller, paced by its own interval)."""
        self.wait_s()  # drops what left the window
        self._made.append(self.clock())

    async def take(self, on_wait: Callable[[float], None] | None = None, leave: int = 0) -> None:
        """Wait for a place that leaves ``leave`` places of the window to others, then count
        one call (``on_wait(seconds)`` before a wait)."""
        async with self._lock:
            while (delay := self.wait_s(leave)) > 0:
                if on_wait is not None:
                    on_wait(delay)
                await asyncio.sleep(delay)
            self._made.append(self.clock())


class AggsFetcher(Protocol):
    """The blocking side: `AggsClient` in production."""

    def fetch(self, ticker: str, from_ms: int, to_ms: int) -> list[Agg]: ...

    def close(self) -> None: ...


class AggsClient:
    """The SDK's `RESTClient`, built as the snapshot client is (no retries inside it)."""

    def __init__(self, api_key: str, base_url: str | None, timeout_s: float = 10.0) -> None:
        self._rest = RESTClient(
            api_key=api_key, base=base_url or DEFAULT_BASE_URL,
            connect_timeout=min(timeout_s, 5.0), read_timeout=timeout_s, retries=0,
            pagination=False, connection_pool_kw={"retries": NoRetry()},
        )

    def fetch(self, ticker: str, from_ms: int, to_ms: int) -> list[Agg]:
        """1 min aggregates of ``ticker`` in [from_ms, to_ms], oldest first. Blocking."""
        aggs: Any = self._rest.get_aggs(ticker, 1, "minute", from_ms, to_ms, sort="asc",
                                        limit=50_000)
        return list(aggs)

    def close(self) -> None:
        """Close pooled connections."""
        self._rest.client.clear()


def bars_of(aggs: Sequence[Agg], now_s: float) -> list[Bar]:
    """Valid closed 1 min bars from aggregates (the minute still forming is left out)."""
    out = []
    for agg in aggs:
        try:
            t = int(agg.timestamp) // 1000
            o, h, lo, c = (round(float(x), 2)
                           for x in (agg.open, agg.high, agg.low, agg.close))
        except (TypeError, ValueError):
            continue
        volume = agg.volume if isinstance(agg.volume, int | float) else None
        count = agg.transactions if isinstance(agg.transactions, int) else 1
        prices_ok = all(math.isfinite(p) and p > 0 for p in (o, h, lo, c))
        if (not prices_ok or t % 60 or t + 60 > now_s or not lo <= min(o, c) <= max(o, c) <= h):
            continue
        out.append(Bar(t, o, h, lo, c, max(count, 1),
                       None if volume is None or volume < 0 else float(volume)))
    return out


BarWriter = Callable[[str, list[Bar]], Awaitable[int]]
"""Stores one ticker's backfilled bars; returns how many were new."""


class Backfill:
    """Fetches the last day of 1 min bars for each ticker, once, within the budget."""

    def __init__(self, fetcher_factory: Callable[[], AggsFetcher], budget: CallBudget,
                 write: BarWriter, clock: Callable[[], float] = time.time, leave: int = 0
                 ) -> None:
        self._fetcher_factory = fetcher_factory
        self._budget = budget
        self._leave = leave  # places of each window kept for the snapshot poller
        self._write = write
        self._clock = clock

    async def run(self, tickers: Sequence[str]) -> None:
        """Backfill ``tickers`` in order; returns when done or refused (403)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="massive-backfill")
        fetcher = self._fetcher_factory()
        added = 0
        try:
            for i, ticker in enumerate(tickers):
                result = await self._one(executor, fetcher, ticker, i, len(tickers))
                if result is None:
                    return
                added += result
            log.info("Massive backfill done: %d 1 min bars added for %d tickers",
                     added, len(tickers))
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            fetcher.close()

    async def _one(self, executor: ThreadPoolExecutor, fetcher: AggsFetcher, ticker: str,
                   done: int, total: int) -> int | None:
        """Bars added for ``ticker``; None when Massive refuses the data (stop)."""
        said = False

        def waiting(seconds: float) -> None:
            nonlocal said
            if said:
                return
            said = True
            log.info("Massive backfill: waiting %.0f s for the %d calls a minute allowed "
                     "(%d of %d tickers done)", seconds, self._budget.calls, done, total)

        loop = asyncio.get_running_loop()
        while True:
            await self._budget.take(waiting, self._leave)
            now = self._clock()
            to_ms = int(now * 1000)
            try:
                aggs = await loop.run_in_executor(
                    executor, fetcher.fetch, ticker, to_ms - DAY_S * 1000, to_ms)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if isinstance(e, StatusError) and e.status == 403:
                    log.warning("Massive refused the 1 min aggregates (HTTP 403: the plan "
                                "does not include them); no backfill")
                    return None
                if isinstance(e, StatusError) and e.status == 429:
                    wait = e.retry_after_s if e.retry_after_s is not None else RATE_LIMIT_WAIT_S
                    log.warning("Massive backfill rate-limited (HTTP 429); retrying %s in "
                                "%.0f s", ticker, wait)
                    await asyncio.sleep(wait)
                    continue
                log.warning("Massive backfill of %s failed: %s; skipping it", ticker,
                            classify(e).detail)
                return 0
            return await self._write(ticker, bars_of(aggs, now))
