"""Real prices from Massive (formerly Polygon.io) by polling REST snapshots, the default
Massive mode (it fits the free tier), through the official `massive` SDK.

The SDK is blocking, so each request runs in a worker thread with timeouts
(`producer.sources.massive_api`); the event loop only waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from producer.sources.base import MassiveSource, Quote, QuoteSink
from producer.sources.massive_api import Failure, SnapshotClient, classify, parse_snapshot
from producer.sources.massive_backfill import CallBudget
from shared.backoff import Backoff
from shared.settings import Settings
from shared.status import QUIET_AFTER_S, feed_of_lag

log = logging.getLogger(__name__)


class Fetcher(Protocol):
    """The blocking side of a poll: `SnapshotClient` in production."""

    def fetch(self, tickers: Sequence[str]) -> Any: ...

    def close(self) -> None: ...


class MassiveRestSource(MassiveSource):
    """Polls one snapshot of every ticker per interval and sends what changed.

    A ticker is sent only when its price or trade time moved, so a closed market is
    quiet; with no trade for `QUIET_AFTER_S` the state says ``market_closed``. Failures
    set `state` and back off (Retry-After honoured, capped); a
    rejected key is retried every ``auth_retry_s``.
    """

    reference = "previous close"

    def __init__(self, fetcher_factory: Callable[[], Fetcher], sink: QuoteSink, *,
                 poll_interval_s: float, request_timeout_s: float = 10.0,
                 max_backoff_s: float = 300.0, auth_retry_s: float = 60.0,
                 budget: CallBudget | None = None) -> None:
        if poll_interval_s <= 0 or max_backoff_s < poll_interval_s:
            raise ValueError("poll interval must be > 0 and <= the backoff cap")
        super().__init__(sink)
        self._fetcher_factory = fetcher_factory
        self.budget = budget  # REST calls a minute, shared with the 1 min backfill
        self._poll_interval_s = poll_interval_s
        # the worker thread has its own urllib3 timeouts; this bounds the whole call
        self._call_timeout_s = request_timeout_s * 2 + 1
        self._max_backoff_s = max_backoff_s
        self._auth_retry_s = auth_retry_s
        self._backoff = Backoff(initial_s=poll_interval_s, cap_s=max_backoff_s)
        self._sent: dict[str, Quote] = {}
        self._reported: set[tuple[str, str]] = set()
        self._fetcher: Fetcher | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def kind(self) -> str:
        return "massive-rest"

    def _run(self) -> list[asyncio.Task[None]]:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="massive-rest")
        self._fetcher = self._fetcher_factory()
        log.info("polling Massive snapshots every %.3g s for %d tickers",
                 self._poll_interval_s, len(self._tickers))
        return [asyncio.create_task(self._poll_forever(), name="massive-rest-poll")]

    def _release(self) -> None:
        if self._executor is not None:
            # a request still in flight ends on its own urllib3 timeout
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None

    async def add_ticker(self, ticker: str, last_price: float | None = None) -> None:
        """Price ``ticker`` from the next poll on."""
        self._tickers[ticker] = None

    async def remove_ticker(self, ticker: str) -> None:
        self._tickers.pop(ticker, None)
        self._sent.pop(ticker, None)
        self._reported = {r for r in self._reported if r[0] != ticker}

    async def _poll_forever(self) -> None:
        while True:
            delay = await self._poll()
            await asyncio.sleep(delay)

    async def _poll(self) -> float:
        """One poll; the seconds to wait before the next one."""
        tickers = list(self._tickers)
        if not tickers:
            return self._poll_interval_s
        if self.budget is not None:
            self.budget.note()  # paced by the poll interval; the backfill gets what is left
        try:
            document = await self._fetch(tickers)
            snapshot = parse_snapshot(document, tickers)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return self._failed(classify(e), e)
        self._recovered(snapshot.quotes)
        self._report_skipped(snapshot.skipped, tickers, snapshot.quotes)
        await self._send(snapshot.quotes)
        return self._poll_interval_s

    async def _fetch(self, tickers: list[str]) -> Any:
        assert self._fetcher is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._executor, self._fetcher.fetch, tickers)
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a stop() that arrives
        # just as the thread's answer lands, and the poll loop never ends
        async with asyncio.timeout(self._call_timeout_s):
            return await call

    async def _send(self, quotes: Mapping[str, Quote]) -> None:
        # a ticker removed while the request was in flight is dropped here
        changed = {t: q for t, q in quotes.items()
                   if t in self._tickers and self._sent.get(t) != q}
        if not changed:
            return
        try:
            await self._sink(changed)
        except Exception:
            log.exception("publishing %d Massive quotes failed; retrying at the next poll",
                          len(changed))
            return
        self._sent.update(changed)

    def _failed(self, failure: Failure, error: BaseException) -> float:
        if failure.state in ("auth_rejected", "plan_missing"):
            delay = self._auth_retry_s
        else:
            delay = self._backoff.next_delay()
            if failure.retry_after_s is not None:
                delay = max(delay, failure.retry_after_s)
            delay = min(delay, self._max_backoff_s)
        if failure.detail != self._detail:  # one line per problem, not one per retry
            self._detail = failure.detail
            serious = failure.state in ("auth_rejected", "plan_missing", "error")
            level = logging.ERROR if serious else logging.WARNING
            hint = "; check MASSIVE_API_KEY" if failure.state == "auth_rejected" else ""
            log.log(level, "%s; retrying in %.1f s%s", failure.detail, delay, hint)
            if failure.state == "error":
                log.debug("unexpected Massive failure", exc_info=error)
        else:
            log.debug("%s again; retrying in %.1f s", failure.detail, delay)
        self._state = failure.state
        return delay

    def _recovered(self, quotes: Mapping[str, Quote]) -> None:
        if self._detail is not None:
            log.info("Massive snapshots are flowing again (after: %s)", self._detail)
        self._detail = None
        self._backoff.reset()
        newest = max((q.timestamp for q in quotes.values()), default=None)
        if newest is not None and (self._last_trade is None or newest > self._last_trade):
            self._last_trade = newest
        lag = None if self._last_trade is None else time.time() - self._last_trade
        self.feed = (feed_of_lag(lag) if lag is not None else None) or self.feed
        quiet = lag is not None and lag > QUIET_AFTER_S
        if quiet and self._state != "market_closed":
            log.info("no trade on Massive for %d min: the market is closed", QUIET_AFTER_S // 60)
        self._state = "market_closed" if quiet else "ok"

    def _report_skipped(self, skipped: Mapping[str, str], tickers: Sequence[str],
                        quotes: Mapping[str, Quote]) -> None:
        missing = {t: "no snapshot" for t in tickers if t not in quotes and t not in skipped}
        for ticker, reason in {**skipped, **missing}.items():
            if (ticker, reason) not in self._reported:
                self._reported.add((ticker, reason))
                log.warning("Massive snapshot of %s skipped: %s", ticker, reason)
        self._reported = {r for r in self._reported if r[0] not in quotes}


def create_rest_source(settings: Settings, sink: QuoteSink) -> MassiveRestSource:
    """The snapshot poller for ``settings`` (key, base URL, poll interval, call budget)."""
    key, base_url = settings.massive_api_key, settings.massive_base_url
    return MassiveRestSource(
        lambda: SnapshotClient(key.get(), base_url, timeout_s=10.0),
        sink,
        poll_interval_s=settings.poll_interval_s,
        max_backoff_s=max(300.0, settings.poll_interval_s),
        budget=CallBudget(settings.massive_calls_per_minute),
    )
