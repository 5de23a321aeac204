"""The websocket streamer: the SDK's WebSocketClient against a local Massive-like feed."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from massive import WebSocketClient

from producer.sources.base import Quote
from producer.sources.factory import create_source
from producer.sources.massive_ws import MassiveStreamSource, feed_of
from shared.settings import Secret, Settings
from tests.helpers.massive import API_KEY, FakeMassiveWS, trade
from tests.helpers.poll import wait_until
from tests.producer.massive.conftest import Batches, lines

pytestmark = pytest.mark.massive

# Trade times on the feed are milliseconds; recent, so the market counts as open (set per
# test: a value taken at collection would be long past when a full suite reaches it).
T0_MS = 0


@pytest.fixture(autouse=True)
def _recent_trade_time() -> None:
    global T0_MS
    T0_MS = (int(time.time()) - 5) * 1000 + 123


def stream_settings(server: FakeMassiveWS) -> Settings:
    return Settings(massive_api_key=Secret(API_KEY), massive_mode="websocket",
                    massive_ws_url=server.url, tick_interval_s=0.05)


@contextlib.asynccontextmanager
async def streaming(server: FakeMassiveWS, sink: Batches,
                    tickers: list[str]) -> AsyncIterator[Any]:
    source = create_source(stream_settings(server), sink)
    assert isinstance(source, MassiveStreamSource)
    await source.start(tickers, {})
    try:
        yield source
    finally:
        await source.stop()


async def test_trades_are_conflated_to_the_latest_per_ticker_per_tick(
        massive_ws: FakeMassiveWS, batches: Batches) -> None:
    async with streaming(massive_ws, batches, ["AAPL", "MSFT"]) as source:
        await massive_ws.wait_until(lambda: massive_ws.subscribed == {"T.AAPL", "T.MSFT"})
        assert massive_ws.paths == ["/stocks"]  # the SDK's URL built from our feed/secure
        await massive_ws.send(
            trade("AAPL", 190.0, T0_MS), trade("AAPL", 190.5, T0_MS + 1),
            trade("MSFT", 420.25, T0_MS), trade("AAPL", 191.0, T0_MS + 2),
            trade("AAPL", 189.0, T0_MS + 1),  # late, out of order: older than 191.0
            trade("NVDA", 800.0, T0_MS),  # not on our watchlist
        )
        got = await batches.wait_for(lambda b: len(b) >= 1)
        assert source.kind == "massive-websocket" and source.state == "ok"
    # the latest price of each; the volume of every trade (100 shares each), late ones too
    assert got[0] == {"AAPL": Quote(191.0, (T0_MS + 2) / 1000, 400.0),
                      "MSFT": Quote(420.25, T0_MS / 1000, 100.0)}


async def test_each_tick_sends_only_what_traded_since_the_last(
        massive_ws: FakeMassiveWS, batches: Batches) -> None:
    async with streaming(massive_ws, batches, ["AAPL", "MSFT"]):
        await massive_ws.wait_until(lambda: len(massive_ws.subscribed) == 2)
        await massive_ws.send(trade("AAPL", 190.0, T0_MS), trade("MSFT", 420.0, T0_MS))
        await batches.wait_for(lambda b: len(b) == 1)
        await massive_ws.send(trade("MSFT", 421.0, T0_MS + 500))
        got = await batches.wait_for(lambda b: len(b) == 2)
    assert got[1] == {"MSFT": Quote(421.0, (T0_MS + 500) / 1000, 100.0)}


async def test_watchlist_changes_subscribe_and_unsubscribe(
        massive_ws: FakeMassiveWS, batches: Batches) -> None:
    async with streaming(massive_ws, batches, ["AAPL"]) as source:
        await massive_ws.wait_until(lambda: massive_ws.subscribed == {"T.AAPL"})
        await source.add_ticker("TSLA")
        await massive_ws.wait_until(lambda: massive_ws.subscribed == {"T.AAPL", "T.TSLA"})
        await source.remove_ticker("AAPL")
        await massive_ws.wait_until(lambda: massive_ws.subscribed == {"T.TSLA"})
        assert source.get_tickers() == ["TSLA"]
        # a trade the feed sent before it handled the unsubscribe is not passed on
        await massive_ws.send(trade("AAPL", 190.0, T0_MS), trade("TSLA", 250.0, T0_MS))
        await batches.wait_for(lambda b: len(b) == 1)
    assert batches.batches == [{"TSLA": Quote(250.0, T0_MS / 1000, 100.0)}]
    assert ("unsubscribe", "T.AAPL") in massive_ws.actions


async def test_clean_close_reconnects_and_resubscribes_the_current_watchlist(
        massive_ws: FakeMassiveWS, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    async with streaming(massive_ws, batches, ["AAPL"]) as source:
        await source.add_ticker("MSFT")
        await massive_ws.wait_until(lambda: massive_ws.subscribed == {"T.AAPL", "T.MSFT"})
        await massive_ws.close_clients()  # code 1000: the SDK's connect() just returns
        await massive_ws.wait_until(lambda: len(massive_ws.connections) == 2
                                    and massive_ws.subscribed == {"T.AAPL", "T.MSFT"})
        await massive_ws.send(trade("MSFT", 421.0, T0_MS))
        got = await batches.wait_for(lambda b: len(b) == 1)
        assert source.state == "ok"
    assert got == [{"MSFT": Quote(421.0, T0_MS / 1000, 100.0)}]
    assert len(lines(caplog, logging.WARNING, "closed by the server; reconnecting")) == 1


async def test_rejected_key_stops_streaming_with_one_clear_line(
        batches: Batches, caplog: pytest.LogCaptureFixture) -> None:
    server = await FakeMassiveWS(accept_key="some-other-key").start()
    try:
        async with streaming(server, batches, ["AAPL"]) as source:
            await wait_until(lambda: source.state == "auth_rejected", what="auth_rejected")
            # the state is set as the stream gives up, so no second attempt can follow
            assert len(server.connections) == 1
    finally:
        await server.close()
    rejected = lines(caplog, logging.ERROR, "rejected the API key")
    assert len(rejected) == 1 and "streaming stopped" in rejected[0]


async def test_bad_frames_are_skipped_and_the_connection_kept(
        massive_ws: FakeMassiveWS, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    async with streaming(massive_ws, batches, ["AAPL"]):
        await massive_ws.wait_until(lambda: massive_ws.subscribed == {"T.AAPL"})
        await massive_ws.send(raw="this is not json")
        await massive_ws.send(trade("AAPL", "190.0", T0_MS), trade("AAPL", 190.0, None), 42,
                              {"ev": "T"})
        await massive_ws.send(trade("AAPL", 190.75, T0_MS))
        got = await batches.wait_for(lambda b: len(b) == 1)
    assert got == [{"AAPL": Quote(190.75, T0_MS / 1000, 100.0)}]
    assert len(massive_ws.connections) == 1
    assert len(lines(caplog, logging.WARNING, "not JSON")) == 1
    assert len(lines(caplog, logging.WARNING, "malformed trade for AAPL")) == 1


async def test_server_status_errors_are_logged_once(
        massive_ws: FakeMassiveWS, batches: Batches,
        caplog: pytest.LogCaptureFixture) -> None:
    async with streaming(massive_ws, batches, ["AAPL"]):
        await massive_ws.wait_until(lambda: massive_ws.subscribed == {"T.AAPL"})
        status = {"ev": "status", "status": "error", "message": "not entitled to T.AAPL"}
        await massive_ws.send(status, status)
        await massive_ws.send(trade("AAPL", 190.0, T0_MS))
        await batches.wait_for(lambda b: len(b) == 1)
    assert len(lines(caplog, logging.WARNING, "status error: not entitled to T.AAPL")) == 1


@pytest.mark.parametrize(("url", "feed", "secure"), [
    (None, "socket.massive.com", True),
    ("ws://127.0.0.1:9000", "127.0.0.1:9000", False),
    ("wss://delayed.massive.com/", "delayed.massive.com", True),
])
def test_ws_url_becomes_the_sdk_feed_and_secure_flag(
        url: str | None, feed: str, secure: bool) -> None:
    assert feed_of(url) == (feed, secure)


async def test_unreachable_feed_shows_in_the_state(batches: Batches) -> None:
    closed = await FakeMassiveWS().start()
    url = closed.url
    await closed.close()  # nothing listens there any more
    settings = Settings(massive_api_key=Secret(API_KEY), massive_ws_url=url)
    feed, secure = feed_of(url)
    source = MassiveStreamSource(
        lambda subs: WebSocketClient(api_key=settings.massive_api_key.get(), feed=feed,
                                     secure=secure, raw=True, subscriptions=subs,
                                     max_reconnects=0),
        batches, tick_interval_s=0.02, connect_grace_s=0.1)
    await source.start(["AAPL"], {})
    try:
        assert source.state in ("starting", "connecting")
        await wait_until(lambda: source.state == "unreachable", what="unreachable state")
        await wait_until(lambda: source.details()["detail"] is not None, what="a detail")
        assert "cannot connect to the Massive websocket" in source.details()["detail"]
    finally:
        await source.stop()
    assert source.state == "stopped" and batches.batches == []


async def test_connect_failures_are_warnings_throttled_not_info_lines(
        batches: Batches, caplog: pytest.LogCaptureFixture) -> None:
    """websockets retries a failed connect itself and reports each attempt on the logger
    it is given, at INFO: `pricefeed up` (which shows warnings only) showed nothing."""
    source = MassiveStreamSource(lambda subs: WebSocketClient(api_key="k", raw=True),
                                 batches, tick_interval_s=0.05)
    caplog.set_level(logging.DEBUG)
    wire = source._wire_log  # the logger the SDK passes on to websockets
    for _ in range(5):
        wire.info("connect failed; reconnecting in %.1f seconds: %s", 3.1,
                  "ConnectionRefusedError: [Errno 111] Connect call failed")
    warned = lines(caplog, logging.WARNING, "cannot connect to the Massive websocket")
    assert len(warned) == 1 and "ConnectionRefusedError" in warned[0]
    assert not lines(caplog, logging.INFO, "connect failed")
    assert source.state == "unreachable"
    wire.info("connection open")  # anything else still reaches the wire logger
    assert lines(caplog, logging.INFO, "connection open")
