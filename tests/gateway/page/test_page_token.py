"""The page with read access on, in a real headless Chromium against a real producer and
gateway: a token from the page's URL or a prompt, and a clear word when the stream is
refused, has expired, or is delayed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.gateway.access.conftest import hs256, jwt_env
from tests.helpers.system import system

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser(chromium_path) -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_the_page_takes_a_token_and_says_when_it_is_refused_expired_or_delayed(
    redis_url, browser
):
    with system(redis_url, **jwt_env()) as sys:
        url = sys.urls[0]
        # No token: the stream is refused, and the page says why and offers a prompt.
        page = browser.new_page()
        page.goto(url + "/")
        banner = page.locator("#access-banner")
        expect(banner).to_contain_text("Access refused: an access token is required")
        expect(page.locator("#status-text")).to_have_text("access refused")
        page.once("dialog", lambda d: d.accept(hs256(tickers=["AAPL"])))
        page.locator("#access-token-button").click()
        expect(page.locator('#rows tr[data-ticker="AAPL"] .price')).to_have_text(
            re.compile(r"^\d[\d,]*\.\d\d$"), timeout=10_000)
        expect(page.locator("#rows tr")).to_have_count(1)  # only the entitled ticker
        expect(banner).to_be_hidden()
        page.close()

        # A token in the page's own URL; it leaves the address bar. Then it expires.
        exp = int(time.time()) + 4
        page = browser.new_page()
        page.goto(url + "/?access_token=" + hs256(tickers=["MSFT", "TSLA"], exp=exp))
        expect(page.locator('#rows tr[data-ticker="MSFT"] .price')).to_have_text(
            re.compile(r"^\d[\d,]*\.\d\d$"), timeout=10_000)
        expect(page.locator("#rows tr")).to_have_count(2)
        assert "access_token" not in page.url
        expect(page.locator("#access-banner")).to_contain_text("expired", timeout=10_000)
        expect(page.locator("#status-text")).to_have_text("access token expired")
        assert time.time() >= exp - 0.1
        page.close()

        # A delayed token: prices show, and the page says they are delayed.
        page = browser.new_page()
        page.goto(url + "/?access_token=" + hs256(tickers=["JPM"], delay_s=1))
        expect(page.locator("#access-delayed")).to_contain_text("Delayed data", timeout=10_000)
        expect(page.locator('#rows tr[data-ticker="JPM"] .price')).to_have_text(
            re.compile(r"^\d[\d,]*\.\d\d$"))
        page.close()
