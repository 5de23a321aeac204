"""The REST snapshot poller against the real SDK and a local HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from producer.sources.base import MarketDataSource, Quote
from producer.sources.factory import create_source
from producer.sources.massive_api import SnapshotClient, to_seconds
from producer.sources.massive_rest import MassiveRestSource
from producer.sources.simulator import SimulatorSource
from shared.errors import SettingsError
from shared.settings import Secret, Settings
from tests.helpers.massive import (
    API_KEY,
    SNAPSHOT_PATH,
    FakeMassiveHTTP,
    Reply,
    malformed,
    rate_limited,
    server_error,
    snapshot_entry,
    unauthorized,
)
from tests.helpers.poll import wait_until
from tests.producer.massive.conftest import Batches, lines

pytestmark = pytest.mark.massive

# A trade time in nanoseconds, as the API sends it: recent, so the market is open (set
# per test: a value taken at collection would be long past when a full suite reaches it).
T0_NS = 0


@pytest.fixture(autouse=True)
def _recent_trade_time() -> None:
    global T0_NS
    T0_NS = (int(time.time()) - 5) * 10**9 + 123_456_789


def quote(price: float, timestamp: float) -> Quote:
    """What the poller makes of `snapshot_entry`: its previous close is the reference."""
    return Quote(price, timestamp, reference=price - 1.25)


def rest_source(server: FakeMassiveHTTP, sink: Batches, **options: Any) -> MassiveRestSource:
    """A poller with test-sized intervals (the settings allow >= 1 s only)."""
    settings: dict[str, Any] = {"poll_interval_s": 0.05, "max_backoff_s": 2.0,
                                "auth_retry_s": 0.05}
    settings.update(options)
    return MassiveRestSource(lambda: SnapshotClient(API_KEY, server.url, timeout_s=2.0), sink,
                             **settings)


@contextlib.asynccontextmanager
async def started(source: MarketDataSource, tickers: Sequence[str]) -> AsyncIterator[Any]:
    await source.start(tickers, {})
    try:
        yield source
    finally:
        await source.stop()


async def test_first_poll_sends_served_prices_with_their_trade_times(
        massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.12, T0_NS),
                       snapshot_entry("MSFT", 420.5, T0_NS + 2_000_000_000))
    settings = Settings(massive_api_key=Secret(API_KEY), massive_base_url=massive_http.url,
                        poll_interval_s=1.0)
    async with started(create_source(settings, batches), ["AAPL", "MSFT"]) as source:
        got = await batches.wait_for(lambda b: len(b) >= 1)
        assert source.kind == "massive-rest" and source.state == "ok"
    assert got[0] == {"AAPL": quote(190.12, T0_NS / 1e9), "MSFT": quote(420.5, T0_NS / 1e9 + 2)}
    request = massive_http.seen()[0]
    assert request.path == SNAPSHOT_PATH  # the string "stocks", not the enum, in the path
    assert request.tickers == ["AAPL", "MSFT"]  # the whole watchlist in one call
    assert request.authorization == f"Bearer {API_KEY}"  # the key from settings, not env


async def test_unchanged_snapshot_is_not_sent_again(
        massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS), snapshot_entry("MSFT", 420.0, T0_NS))
    async with started(rest_source(massive_http, batches), ["AAPL", "MSFT"]):
        await batches.wait_for(lambda b: len(b) == 1)
        await wait_until(lambda: len(massive_http.seen()) >= 5, what="five polls")
        assert len(batches.batches) == 1  # a closed market stays quiet
        massive_http.serve(snapshot_entry("AAPL", 190.5, T0_NS + 10**9))
        got = await batches.wait_for(lambda b: len(b) == 2)
    assert got[1] == {"AAPL": quote(190.5, T0_NS / 1e9 + 1)}


async def test_new_trade_time_at_the_same_price_is_sent(
        massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS))
    async with started(rest_source(massive_http, batches), ["AAPL"]):
        await batches.wait_for(lambda b: len(b) == 1)
        massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS + 5 * 10**9))
        got = await batches.wait_for(lambda b: len(b) == 2)
    assert got[1]["AAPL"].timestamp == pytest.approx(T0_NS / 1e9 + 5)


@pytest.mark.parametrize(("raw", "seconds"), [
    (1_732_540_000, 1_732_540_000.0),
    (1_732_540_000.5, 1_732_540_000.5),
    (1_732_540_000_250, 1_732_540_000.25),
    (1_732_540_000_250_000, 1_732_540_000.25),
    (1_732_540_000_250_000_000, 1_732_540_000.25),
    (None, None), (0, None), (-5, None), ("1732540000", None), (True, None),
    (float("nan"), None), (float("inf"), None),
])
def test_timestamps_in_any_unit_become_float_seconds(raw: object, seconds: float | None) -> None:
    assert to_seconds(raw) == (pytest.approx(seconds) if seconds is not None else None)


async def test_trade_without_time_falls_back_to_snapshot_updated(
        massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.serve(snapshot_entry("AAPL", 191.0, None, updated=1_732_540_000_250))  # ms
    async with started(rest_source(massive_http, batches), ["AAPL"]):
        got = await batches.wait_for(lambda b: len(b) == 1)
    assert got[0] == {"AAPL": quote(191.0, 1_732_540_000.25)}


async def test_bad_ticker_entries_are_skipped_alone(
        massive_http: FakeMassiveHTTP, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    massive_http.serve(
        snapshot_entry("AAPL", 190.0, T0_NS),
        snapshot_entry("GOOGL", 175.0, T0_NS, last_trade=None),  # no lastTrade at all
        snapshot_entry("NFLX", 600.0, T0_NS, last_trade={"p": "600.0", "t": T0_NS}),
        snapshot_entry("TSLA", 250.0, T0_NS, last_trade={"p": -1.0, "t": T0_NS}),
        snapshot_entry("META", 500.0, T0_NS, last_trade="garbage"),
    )
    tickers = ["AAPL", "GOOGL", "NFLX", "TSLA", "META", "V"]
    async with started(rest_source(massive_http, batches), tickers) as source:
        await batches.wait_for(lambda b: len(b) == 1)
        await wait_until(lambda: len(massive_http.seen()) >= 4, what="four polls")
        assert source.state == "ok"
    assert batches.batches == [{"AAPL": quote(190.0, T0_NS / 1e9)}]
    for ticker in ("GOOGL", "NFLX", "TSLA", "META", "V"):  # one line each, not one per poll
        assert len(lines(caplog, logging.WARNING, f"snapshot of {ticker} skipped")) == 1


async def test_added_ticker_is_priced_at_the_next_poll_and_removed_one_stops(
        massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS), snapshot_entry("TSLA", 250.0, T0_NS))
    async with started(rest_source(massive_http, batches), ["AAPL"]) as source:
        await batches.wait_for(lambda b: len(b) == 1)
        await source.add_ticker("TSLA")
        got = await batches.wait_for(lambda b: any("TSLA" in batch for batch in b))
        assert got[-1] == {"TSLA": quote(250.0, T0_NS / 1e9)}
        await source.remove_ticker("AAPL")
        assert source.get_tickers() == ["TSLA"]
        asked = len(massive_http.seen())
        massive_http.serve(snapshot_entry("AAPL", 195.0, T0_NS + 10**9),
                           snapshot_entry("TSLA", 251.0, T0_NS + 10**9))
        got = await batches.wait_for(lambda b: b[-1].get("TSLA") == quote(251.0, T0_NS / 1e9 + 1))
    assert all(request.tickers == ["TSLA"] for request in massive_http.seen()[asked + 1:])
    assert "AAPL" not in got[-1]


async def test_rejected_key_is_one_line_a_visible_state_and_retried(
        massive_http: FakeMassiveHTTP, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS))
    massive_http.then(*[unauthorized()] * 4)
    async with started(rest_source(massive_http, batches), ["AAPL"]) as source:
        await wait_until(lambda: len(massive_http.seen()) >= 2, what="a retry after the 401")
        assert source.state == "auth_rejected"
        got = await batches.wait_for(lambda b: len(b) == 1)  # the key is accepted again
        assert source.state == "ok"
    assert got[0] == {"AAPL": quote(190.0, T0_NS / 1e9)}
    rejected = lines(caplog, logging.ERROR, "rejected the API key")
    assert len(rejected) == 1 and "MASSIVE_API_KEY" in rejected[0]
    assert lines(caplog, logging.INFO, "flowing again")


async def test_rejected_key_is_retried_slowly(
        massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.then(Reply(403, b'{"status":"NOT_AUTHORIZED","message":"not entitled"}'))
    async with started(rest_source(massive_http, batches, auth_retry_s=0.6), ["AAPL"]) as source:
        await wait_until(lambda: len(massive_http.seen()) >= 2, what="the retry after a 403")
        first, second = massive_http.seen()[:2]
        assert source.state in ("plan_missing", "ok")
    assert second.at - first.at >= 0.55  # auth_retry_s, not the 0.05 s poll interval


async def test_a_plan_without_the_snapshot_endpoint_is_not_called_a_rejected_key(
        massive_http: FakeMassiveHTTP, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    body = b'{"status":"NOT_AUTHORIZED","request_id":"r9","message":"You are not entitled ' \
           b'to this data. Please upgrade your plan at https://massive.com/pricing"}'
    massive_http.then(Reply(403, body), Reply(403, body))
    async with started(rest_source(massive_http, batches, auth_retry_s=0.3), ["AAPL"]) as source:
        await wait_until(lambda: len(massive_http.seen()) >= 2, what="the retry after a 403")
        assert source.state == "plan_missing"
    errors = lines(caplog, logging.ERROR, "NOT_AUTHORIZED")
    assert len(errors) == 1, errors
    assert "plan does not include the stocks snapshot endpoint" in errors[0]
    assert "5 calls a minute" in errors[0] and "delayed data" in errors[0]
    assert not lines(caplog, logging.ERROR, "rejected the API key")


async def test_a_403_without_not_authorized_is_still_a_rejected_key(
        massive_http: FakeMassiveHTTP, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    massive_http.then(Reply(403, b'{"status":"ERROR","error":"Unknown API Key"}'))
    async with started(rest_source(massive_http, batches, auth_retry_s=0.3), ["AAPL"]) as source:
        await wait_until(lambda: source.state == "auth_rejected", what="auth_rejected")
    assert lines(caplog, logging.ERROR, "rejected the API key (HTTP 403)")


async def test_rate_limit_honours_retry_after(
        massive_http: FakeMassiveHTTP, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS))
    massive_http.then(rate_limited("1"))
    async with started(rest_source(massive_http, batches), ["AAPL"]) as source:
        await wait_until(lambda: len(massive_http.seen()) >= 1, what="the first request")
        await wait_until(lambda: source.state == "rate_limited", what="rate_limited state")
        await batches.wait_for(lambda b: len(b) == 1)
    first, second = massive_http.seen()[:2]
    assert second.at - first.at >= 0.95  # Retry-After: 1, though the backoff says 0.05 s
    assert len(lines(caplog, logging.WARNING, "HTTP 429")) == 1


async def test_retry_after_is_capped(massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS))
    massive_http.then(rate_limited("3600"))
    started_at = time.monotonic()
    async with started(rest_source(massive_http, batches, max_backoff_s=0.3), ["AAPL"]):
        await batches.wait_for(lambda b: len(b) == 1)
    assert time.monotonic() - started_at < 3


async def test_server_errors_back_off_exponentially_then_recover(
        massive_http: FakeMassiveHTTP, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS))
    massive_http.then(*[server_error()] * 4)
    async with started(rest_source(massive_http, batches, poll_interval_s=0.1), ["AAPL"]) as source:
        await wait_until(lambda: source.state == "upstream_error", what="upstream_error")
        await batches.wait_for(lambda b: len(b) == 1, timeout_s=10)
        assert source.state == "ok"
    at = [r.at for r in massive_http.seen()[:5]]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    # 0.1, 0.2, 0.4, 0.8 s with ±20 % jitter: each wait is at least 1.33 x the one before
    assert gaps[0] >= 0.07, gaps
    assert all(later > 1.2 * earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert len(lines(caplog, logging.WARNING, "HTTP 500")) == 1  # not one line per retry


async def test_malformed_json_is_a_failed_poll_not_a_crash(
        massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS))
    massive_http.then(malformed(), Reply(200, b'{"status": "OK", "tickers": 7}'))
    async with started(rest_source(massive_http, batches), ["AAPL"]) as source:
        await wait_until(lambda: source.state == "bad_response", what="bad_response state")
        await batches.wait_for(lambda b: len(b) == 1)
        assert source.state == "ok"


async def test_unreachable_server_sets_state_and_keeps_trying(
        batches: Batches, caplog: pytest.LogCaptureFixture) -> None:
    closed = FakeMassiveHTTP()
    url = closed.url
    closed.close()  # nothing listens on this port any more
    source = MassiveRestSource(lambda: SnapshotClient(API_KEY, url, timeout_s=1.0), batches,
                               poll_interval_s=0.02, max_backoff_s=0.05)
    async with started(source, ["AAPL"]):
        await wait_until(lambda: source.state == "unreachable", what="unreachable state")
        await wait_until(lambda: len(lines(caplog, logging.DEBUG, "again; retrying")) >= 3,
                         what="three retries")
    assert len(lines(caplog, logging.WARNING, "cannot reach Massive")) == 1


async def test_stop_does_not_wait_for_a_hanging_request(
        massive_http: FakeMassiveHTTP, batches: Batches) -> None:
    massive_http.then(Reply(200, b'{"status": "OK", "tickers": []}', delay_s=3.0))
    source = rest_source(massive_http, batches)
    await source.start(["AAPL"], {})
    await wait_until(lambda: len(massive_http.seen()) == 1, what="the hanging request")
    began = time.monotonic()
    await source.stop()  # the SDK blocks in a worker thread, not on the event loop
    assert time.monotonic() - began < 0.5
    assert source.state == "stopped"


def test_factory_chooses_the_simulator_for_a_blank_key() -> None:
    source = create_source(Settings(massive_api_key=Secret("  ")), Batches())
    assert isinstance(source, SimulatorSource)


def test_an_unknown_mode_is_refused_by_the_settings() -> None:
    # The settings alone validate PRICEFEED_MASSIVE_MODE; the factory only chooses.
    with pytest.raises(SettingsError, match="PRICEFEED_MASSIVE_MODE"):
        Settings.from_env({"MASSIVE_API_KEY": API_KEY, "PRICEFEED_MASSIVE_MODE": "carrier-pigeon"})


def test_a_poll_interval_below_one_second_is_refused_by_the_settings() -> None:
    with pytest.raises(SettingsError, match="PRICEFEED_POLL_INTERVAL"):
        Settings.from_env({"MASSIVE_API_KEY": API_KEY, "PRICEFEED_POLL_INTERVAL": "0.2"})



async def test_stop_ends_polling_even_when_the_answer_lands_at_the_same_moment(
        massive_http: FakeMassiveHTTP, batches: Batches,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: `asyncio.wait_for` (Python 3.11) swallowed a cancel that arrived after
    the worker thread's answer had landed but before the poll task resumed; stop() then
    waited forever on a poll loop that went on polling."""
    massive_http.serve(snapshot_entry("AAPL", 190.0, T0_NS))
    loop = asyncio.get_running_loop()
    polls: list[asyncio.Task[None]] = []

    def cancel_the_poll() -> None:
        polls[-1].cancel()  # as stop() does

    class LandingExecutor(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            future = super().submit(fn, *args, **kwargs)
            # lands the cancel right around the loop iteration that takes the answer
            future.add_done_callback(
                lambda _: loop.call_soon_threadsafe(loop.call_soon, cancel_the_poll))
            return future

    monkeypatch.setattr("producer.sources.massive_rest.ThreadPoolExecutor", LandingExecutor)
    # The thread's two hand-offs to the loop may or may not share an iteration, so the
    # race is hit in most attempts, not all: 15 attempts make a miss vanishingly rare.
    for attempt in range(15):
        source = rest_source(massive_http, batches)
        await source.start(["AAPL"], {})
        assert len(source._tasks) == 1
        polls.append(source._tasks[0])
        try:
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(polls[-1], 2)
        finally:
            await source.stop()
        # a lost cancel shows as a second poll (a later one's cancel then ends the loop)
        assert len(massive_http.seen()) == attempt + 1


@pytest.mark.parametrize("age_s,state,feed", [
    (3.0, "ok", "real time"), (15 * 60.0, "ok", "delayed 15 min"),
    (5 * 3600.0, "market_closed", None),
])
async def test_the_status_tells_the_feed_and_a_closed_market_from_the_trade_times(
        massive_http: FakeMassiveHTTP, batches: Batches, age_s: float, state: str,
        feed: str | None) -> None:
    traded = time.time() - age_s
    massive_http.serve(snapshot_entry("AAPL", 190.0, int(traded * 1e9)))
    async with started(rest_source(massive_http, batches), ["AAPL"]) as source:
        await batches.wait_for(lambda b: len(b) >= 1)
        assert source.state == state
        details = source.details()
    assert details["feed"] == feed and details["reference"] == "previous close"
    assert details["last_trade"] == pytest.approx(traded, abs=1e-3)
    assert details["detail"] is None
