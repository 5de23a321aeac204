"""The page tells the truth about its prices: the source and its state, a Change % since
the day's reference, which rows changed, and watchlist changes from other tabs at once.

A real gateway process and a real Chromium; the "producer" is the test writing into
Redis as the contract says (heartbeat, status, ticks), so each state can be set exactly.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bench.contract_publisher import ContractWriter
from shared.keys import Keys
from tests.gateway.page.test_page import CHROMIUM_ARGS, Gateway
from tests.helpers.poll import wait_for
from tests.helpers.support import Service, free_port

pytestmark = pytest.mark.browser

PRICES = {"AAPL": 190.0, "MSFT": 420.0, "TSLA": 250.0}
REFERENCES = {"AAPL": 180.0, "MSFT": 400.0, "TSLA": 250.0}
SIMULATOR = {"source": "simulator", "state": "ok", "feed": "simulated",
             "reference": "first price of the UTC day"}


class ServingGateway(Gateway):
    """A gateway that is up even when the source it reports produces nothing (503)."""

    def _ready(self) -> bool:
        assert self.service is not None and self.service.alive(), self.service.output()
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{self.url}/api/ready", timeout=2)
            return answer.status_code == 200 or "price source" in answer.text
        return False


class Feed:
    """The producer's side of the contract, written by the test."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.writer = ContractWriter(client, keys, PRICES, REFERENCES)

    def status(self, **fields: Any) -> None:
        self.client.set(self.keys.producer, "test-feed")
        self.client.set(self.keys.producer_status, json.dumps(fields))


@pytest.fixture
def feed(sredis: redis.Redis, namespace: str) -> Feed:
    keys = Keys(namespace)
    sredis.sadd(keys.watchlist, *PRICES)
    feed = Feed(sredis, keys)
    feed.status(**SIMULATOR)
    feed.writer.tick()
    return feed


@pytest.fixture
def gateway(service_env: dict[str, str], feed: Feed, tmp_path: Path) -> Iterator[Gateway]:
    gw = ServingGateway(service_env, tmp_path)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, url: str) -> Page:
    page = browser.new_context(viewport={"width": 1000, "height": 640},
                               timezone_id="UTC").new_page()
    page.goto(url + "/")
    expect(page.locator("#rows tr")).to_have_count(len(PRICES))
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    return page


def percent(value: float) -> str:
    """The page's formatting of a percentage (formatPercent in app.js)."""
    digits = 2 if abs(value) >= 1 else 3
    sign = "+" if value > 0 else "−" if value < 0 else ""
    return f"{sign}{abs(value):.{digits}f}%"


def row(page: Page, ticker: str):
    return page.locator(f'#rows tr[data-ticker="{ticker}"]')


WATCH_FLASHES = """() => {
  window.flashed = [];
  new MutationObserver((changes) => {
    for (const c of changes) {
      const cls = c.target.classList;
      if (cls.contains("flash-up") || cls.contains("flash-down")) {
        window.flashed.push([c.target.closest("tr").dataset.ticker, c.target.tagName,
                             c.target.className]);
      }
    }
  }).observe(document.getElementById("rows"),
             {subtree: true, attributes: true, attributeFilter: ["class"]});
}"""


def test_simulated_prices_are_labelled_and_change_is_since_the_reference(
        browser: Browser, gateway: Gateway, feed: Feed, artifacts_dir: Path) -> None:
    page = open_page(browser, gateway.url)
    expect(page.locator("#source")).to_have_text("simulated prices")
    expect(page.locator("#source")).to_have_attribute("data-look", "simulated")
    expect(page.locator("#source-note")).to_have_text(
        "Simulated prices (a random walk), not market data. "
        "Change % since the first simulated price of the UTC day.")
    page.evaluate(WATCH_FLASHES)
    update = feed.writer.tick(moves={"AAPL": 1.01, "MSFT": 1.0, "TSLA": 1.0})  # only AAPL moves
    expect(row(page, "AAPL").locator(".price")).to_have_text(f"{update['AAPL'].price:,.2f}")
    # Since the reference (180.00), not since the last tick (+1 %).
    expect(row(page, "AAPL").locator(".change")).to_have_text(
        percent(update["AAPL"].day_change_percent))
    expect(row(page, "MSFT").locator(".change")).to_have_text(
        percent(update["MSFT"].day_change_percent))
    assert update["AAPL"].day_change_percent > 6 > abs(update["AAPL"].change_percent)
    page.wait_for_function("() => window.flashed.length > 0")
    page.screenshot(path=artifacts_dir / "page-simulated-change.png")
    flashed = page.evaluate("window.flashed")
    # The moved price's own cell, and nothing else: not its row, not the unmoved rows.
    assert {(t, tag) for t, tag, _ in flashed} == {("AAPL", "TD")}, flashed
    assert all("price" in cls and "flash-up" in cls for _, _, cls in flashed)


def _today_at(hour: int, minute: int) -> float:
    y, m, d = time.gmtime()[:3]
    return float(calendar.timegm((y, m, d, hour, minute, 0)))


STATES = [
    ({"source": "massive-rest", "state": "unreachable", "feed": None,
      "reference": "previous close", "detail": "cannot reach Massive (NewConnectionError)"},
     "source unreachable", "bad", "page-source-unreachable.png"),
    ({"source": "massive-websocket", "state": "auth_rejected", "feed": "real time",
      "detail": "the API key was rejected on the websocket"},
     "key rejected", "bad", "page-key-rejected.png"),
    ({"source": "massive-rest", "state": "market_closed", "feed": None,
      "reference": "previous close", "last_trade": "16:00"},
     "market closed — last trade 16:00", "quiet", "page-market-closed.png"),
    ({"source": "massive-rest", "state": "ok", "feed": "delayed 15 min",
      "reference": "previous close"},
     "Massive REST · delayed 15 min", "ok", "page-massive-delayed.png"),
]


def test_the_page_shows_the_source_and_its_state(
        browser: Browser, gateway: Gateway, feed: Feed, artifacts_dir: Path) -> None:
    page = open_page(browser, gateway.url)
    expect(page.locator("#source")).to_have_text("simulated prices")
    for status, pill, look, screenshot in STATES:
        if status.get("last_trade") == "16:00":
            status = {**status, "last_trade": _today_at(16, 0)}
        feed.status(**status)
        expect(page.locator("#source")).to_have_text(pill)  # pushed within a second
        expect(page.locator("#source")).to_have_attribute("data-look", look)
        if status.get("detail"):
            assert status["detail"] in page.locator("#source").get_attribute("title")
        if status.get("reference") == "previous close":
            expect(page.locator("#source-note")).to_have_text(
                "Change % since the previous close.")
        page.screenshot(path=artifacts_dir / screenshot)
        ready = httpx.get(gateway.url + "/api/ready", timeout=5)
        assert ready.status_code == (200 if look in ("ok", "quiet") else 503), ready.text

    feed.client.delete(feed.keys.producer)  # and then the producer goes away
    expect(page.locator("#source")).to_have_text("no producer running")


def test_watchlist_changes_reach_other_tabs_at_once_and_a_removal_can_be_undone(
        browser: Browser, gateway: Gateway, artifacts_dir: Path) -> None:
    mine, theirs = open_page(browser, gateway.url), open_page(browser, gateway.url)
    started = time.monotonic()
    row(mine, "TSLA").locator(".remove").click()
    # Pushed on the stream: a second is plenty even on a busy 2-core machine (it was
    # up to 15 s of polling). 3 s bounds a Redis publish, one SMEMBERS and one event.
    expect(row(theirs, "TSLA")).to_have_count(0, timeout=3_000)
    took = time.monotonic() - started
    expect(mine.locator("#undo")).to_be_visible()
    expect(mine.locator("#undo-text")).to_have_text(
        "Removed TSLA from the watchlist, for everyone watching it.")
    mine.screenshot(path=artifacts_dir / "page-removed-undo.png")
    mine.click("#undo-button")
    expect(row(mine, "TSLA")).to_have_count(1)
    expect(row(theirs, "TSLA")).to_have_count(1, timeout=3_000)
    expect(mine.locator("#undo")).to_be_hidden()
    mine.fill("#ticker-input", "pypl")
    mine.click("#add-button")
    expect(row(theirs, "PYPL")).to_have_count(1, timeout=3_000)
    assert took < 3.0


def test_the_add_box_explains_each_mistake(
        browser: Browser, gateway: Gateway, artifacts_dir: Path) -> None:
    page = open_page(browser, gateway.url)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.fill("#ticker-input", "not a ticker!")
    page.click("#add-button")
    server = httpx.post(gateway.url + "/api/watchlist", json={"ticker": "not a ticker!"})
    detail = server.json()["detail"]
    assert detail.startswith("ticker must be")  # said once, not "ticker: ticker must be"
    expect(page.locator("#form-error")).to_have_text(detail)
    page.fill("#ticker-input", "   ")  # only spaces: the old error must not stay
    page.click("#add-button")
    expect(page.locator("#form-error")).to_have_text("type a ticker symbol, e.g. PYPL")
    sent = len(posts)
    page.fill("#ticker-input", " msft")  # already there: said, and nothing is sent
    page.click("#add-button")
    expect(page.locator("#form-note")).to_have_text("MSFT is already on the watchlist")
    expect(page.locator("#form-error")).to_have_text("")
    page.screenshot(path=artifacts_dir / "page-add-known.png")
    assert len(posts) == sent == 1


def test_with_massive_unreachable_the_page_says_so_instead_of_a_live_dot(
        browser: Browser, service_env: dict[str, str], tmp_path: Path,
        artifacts_dir: Path) -> None:
    """The producer for real, with a key and a Massive that refuses connections."""
    env = {**service_env, "MASSIVE_API_KEY": "k-test", "PRICEFEED_TICKERS": "AAPL,MSFT,TSLA",
           "PRICEFEED_MASSIVE_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    producer = Service(["producer"], env, tmp_path / "producer.log")
    gateway = ServingGateway(env, tmp_path)
    try:
        gateway.start()
        page = open_page(browser, gateway.url)
        expect(page.locator("#source")).to_have_text("source unreachable")
        assert "cannot reach Massive" in page.locator("#source").get_attribute("title")
        expect(page.locator("#rows .price")).to_have_text(["—", "—", "—"])
        page.screenshot(path=artifacts_dir / "page-massive-unreachable.png")
        ready = wait_for(lambda: httpx.get(gateway.url + "/api/ready", timeout=5), 5)
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith("price source not producing: source unreachable")
    finally:
        gateway.stop()
        producer.stop()
