"""The page at / in a real headless Chromium, against a real producer and gateway."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.helpers.poll import wait_for
from tests.helpers.support import Service, free_port

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TEN = ["AAPL", "AMZN", "GOOGL", "JPM", "META", "MSFT", "NFLX", "NVDA", "TSLA", "V"]


class Gateway:
    """A gateway process that the test can stop and start again on the same port."""

    def __init__(self, env: dict[str, str], log_dir) -> None:
        self.port = free_port()
        self.env = {**env, "PRICEFEED_PORT": str(self.port)}
        self.log_dir = log_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.service: Service | None = None

    def start(self) -> None:
        n = len(list(self.log_dir.glob("gateway*.log")))
        self.service = Service(["gateway"], self.env, self.log_dir / f"gateway{n}.log")
        wait_for(self._ready, 30, 0.1, "gateway ready")

    def _ready(self) -> bool:
        assert self.service is not None and self.service.alive(), self.service.output()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/api/ready", timeout=2).status_code == 200
        return False

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None


@pytest.fixture
def gateway_env() -> dict[str, str]:
    """Extra settings for the gateway (and producer) of one test."""
    return {}


@pytest.fixture
def system(service_env, gateway_env, tmp_path) -> Iterator[Gateway]:
    env = {**service_env, "PRICEFEED_TICK_INTERVAL": "0.2", **gateway_env}
    producer = Service(["producer"], env, tmp_path / "producer.log")
    gateway = Gateway(env, tmp_path)
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.stop()
        producer.stop()


@pytest.fixture
def page(system, chromium_path) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.foreign = []  # requests to any other host: the page must make none
            page.on("request", lambda r: None if r.url.startswith(system.url)
                    else page.foreign.append(r.url))
            yield page
        finally:
            browser.close()


def price_of(page: Page, ticker: str) -> str:
    return page.locator(f'#rows tr[data-ticker="{ticker}"] .price').inner_text()


def wait_price_moves(page: Page, timeout_ms: float = 15_000) -> None:
    """Wait until some displayed price differs from what is shown now."""
    page.wait_for_function(
        """(before) => [...document.querySelectorAll('#rows tr')].some(
               (tr) => before[tr.dataset.ticker] !== undefined &&
                       tr.querySelector('.price').textContent !== before[tr.dataset.ticker])""",
        arg={t: price_of(page, t) for t in TEN}, timeout=timeout_ms)


def test_live_page_add_remove_and_reconnect(page: Page, system: Gateway, artifacts_dir):
    page.goto(system.url + "/")
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(10)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.ticker)") == TEN
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    for ticker in TEN:
        expect(page.locator(f'#rows tr[data-ticker="{ticker}"] .price')).to_have_text(
            _price_pattern())
    wait_price_moves(page)
    page.wait_for_selector("#rows .price.flash-up, #rows .price.flash-down", timeout=10_000)
    page.wait_for_function(  # sparklines drawn from the stream since page load
        "() => [...document.querySelectorAll('#rows polyline')].every("
        "  (p) => p.getAttribute('points').split(' ').length >= 3)", timeout=15_000)
    page.screenshot(path=artifacts_dir / "page-live.png")

    # Add: it appears with a price. An invalid symbol: the server's own message is shown.
    page.fill("#ticker-input", " pypl ")
    page.click("#add-button")
    pypl = page.locator('#rows tr[data-ticker="PYPL"]')
    expect(pypl.locator(".price")).to_have_text(_price_pattern(), timeout=15_000)
    page.fill("#ticker-input", "not a ticker!")
    page.click("#add-button")
    server = httpx.post(system.url + "/api/watchlist", json={"ticker": "not a ticker!"})
    assert server.status_code == 422
    expect(page.locator("#form-error")).to_have_text(server.json()["detail"])
    page.screenshot(path=artifacts_dir / "page-added.png")

    # Remove: gone from the page and from the watchlist.
    pypl.locator(".remove").click()
    expect(pypl).to_have_count(0)
    listed = [i["ticker"] for i in httpx.get(system.url + "/api/watchlist").json()]
    assert "PYPL" not in listed

    # The gateway goes away: the dot turns red. It comes back: green, and prices flow.
    system.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "down", timeout=15_000)
    page.screenshot(path=artifacts_dir / "page-gateway-down.png")
    system.start()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected",
                                                      timeout=20_000)
    wait_price_moves(page)
    page.screenshot(path=artifacts_dir / "page-reconnected.png")
    # Green, then yellow at most until red, red until green again: no flapping.
    shown = page.evaluate("window.pricefeedStatusLog")
    assert shown[-1] == "connected" and "down" in shown
    outage = shown[shown.index("connected") + 1:-1]
    assert outage[-1] == "down" and "connected" not in outage
    assert "reconnecting" not in outage[outage.index("down"):], shown

    # On a phone-sized screen every column, the remove button included, stays visible.
    page.set_viewport_size({"width": 400, "height": 800})
    box = page.locator('#rows tr[data-ticker="AAPL"] .remove').bounding_box()
    assert box is not None and box["x"] + box["width"] <= 400
    page.screenshot(path=artifacts_dir / "page-phone.png")
    assert page.foreign == []


@pytest.mark.parametrize("gateway_env", [{"PRICEFEED_API_TOKEN": "s3cret-token"}])
def test_page_asks_for_the_api_token_when_writes_need_one(page: Page, system: Gateway):
    page.goto(system.url + "/")
    expect(page.locator("#rows tr")).to_have_count(10)
    answers = iter(["wrong-token", "s3cret-token"])
    page.on("dialog", lambda dialog: dialog.accept(next(answers)))
    page.fill("#ticker-input", "PYPL")
    page.click("#add-button")
    expect(page.locator("#form-error")).to_contain_text("token")  # the server's 401 message
    expect(page.locator('#rows tr[data-ticker="PYPL"]')).to_have_count(0)
    page.click("#add-button")  # asked again; the right token this time
    expect(page.locator('#rows tr[data-ticker="PYPL"] .price')).to_have_text(
        _price_pattern(), timeout=15_000)
    page.locator('#rows tr[data-ticker="PYPL"] .remove').click()  # the token is kept
    expect(page.locator('#rows tr[data-ticker="PYPL"]')).to_have_count(0)
    assert page.foreign == []


def _price_pattern() -> re.Pattern[str]:
    return re.compile(r"^\d{1,3}(,\d{3})*\.\d{2}$")


def test_a_wiped_dataset_shows_resynced_and_prices_go_on(page: Page, system: Gateway, sredis,
                                                         namespace):
    page.goto(system.url + "/")
    expect(page.locator("#rows tr")).to_have_count(10)
    wait_price_moves(page)
    expect(page.locator("#resynced")).to_be_hidden()
    for key in list(sredis.scan_iter(match=f"{namespace}:*")):  # the dataset is wiped
        sredis.delete(key)
    expect(page.locator("#resynced")).to_be_visible(timeout=15_000)
    expect(page.locator("#resynced")).to_have_text("resynced")
    assert page.evaluate("window.pricefeedResets") == 1
    wait_price_moves(page)  # the new dataset's prices are shown
    expect(page.locator("#resynced")).to_be_hidden(timeout=10_000)  # a short note
    assert page.foreign == []


def test_the_page_runs_under_its_csp_and_refuses_to_be_framed(page: Page, system: Gateway):
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.goto(system.url + "/")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#rows tr")).to_have_count(10)
    assert violations == []
    # A hostile page framing ours (clickjacking the ✕ buttons): the browser refuses it.
    # Framed even by a page of its own origin, which browsers otherwise allow: a foreign
    # one may be kept out by the browser for other reasons (private network access),
    # which would hide what the headers do.
    hostile = f"{system.url}/hostile"
    page.route(hostile, lambda route: route.fulfill(
        content_type="text/html", body=f'<iframe src="{system.url}/"></iframe>'))
    with page.expect_event("framenavigated", predicate=lambda f: f.parent_frame is not None) \
            as navigated:
        page.goto(hostile)
    frame = navigated.value
    frame.wait_for_load_state()
    assert frame.locator("#rows").count() == 0, "the page rendered inside a foreign frame"
