"""The page's bars in a real headless Chromium against a real producer and gateway:
sparklines start full, and a click opens a chart that is drawn, backfilled and moves."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.gateway.page.test_page import Gateway, gateway_env, page, system  # noqa: F401 (fixtures)
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.browser

# Canvas pixels that are not the background: the candles, the line, the axes' labels.
PAINTED = """() => [...document.querySelectorAll('#chart canvas')].reduce((sum, c) => {
    if (!c.width || !c.height) return sum;
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
    return sum + n; }, 0)"""


def closed_1s_bars(system: Gateway, ticker: str) -> int:  # noqa: F811
    body = httpx.get(f"{system.url}/api/bars/{ticker}?interval=1s", timeout=5).json()
    return sum(not b["partial"] for b in body["bars"])


def test_sparklines_start_full_and_the_chart_is_backfilled_then_live(
        page: Page, system: Gateway, artifacts_dir) -> None:  # noqa: F811
    wait_for(lambda: closed_1s_bars(system, "AAPL") >= 4, 20, 0.2, "some closed 1 s bars")
    page.goto(system.url + "/")
    expect(page.locator("#rows tr")).to_have_count(10)
    # Prefilled from the bars: the sparkline has the closes from before the page loaded.
    page.wait_for_function("() => (state.rows.get('AAPL').prefilled || 0) >= 4",
                           timeout=10_000)
    assert page.evaluate("state.rows.get('AAPL').history.length") >= 4

    page.locator('#rows tr[data-ticker="AAPL"] th').click()
    expect(page.locator("#chart-panel")).to_be_visible()
    expect(page.locator("#chart-ticker")).to_have_text("AAPL")
    page.wait_for_function("() => pricefeedChart.backfilled && pricefeedChart.backfillCount >= 1",
                           timeout=10_000)
    assert page.evaluate("pricefeedChart.interval") == "1m"
    page.wait_for_function(f"() => ({PAINTED})() > 500", timeout=10_000)  # candles drawn
    page.wait_for_function("() => pricefeedChart.updates >= 2", timeout=10_000)  # it moves
    expect(page.locator("#chart-legend")).to_contain_text("UTC")
    page.screenshot(path=artifacts_dir / "chart-1m.png", full_page=True)

    page.click('[data-interval-choice="1s"]')
    page.wait_for_function(
        "() => pricefeedChart.interval === '1s' && pricefeedChart.backfilled"
        " && pricefeedChart.backfillCount >= 4", timeout=10_000)
    before = page.evaluate("pricefeedChart.series.data().length")
    assert before >= 4
    assert "value" in page.evaluate("pricefeedChart.series.data().at(-1)")  # a line, not candles
    page.wait_for_function("(n) => pricefeedChart.series.data().length > n", arg=before,
                           timeout=10_000)  # a new second's point arrived live
    box = page.locator("#chart").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    expect(page.locator("#chart-legend")).to_contain_text(" O ")  # the crosshair's values
    expect(page.locator("#chart-legend")).to_contain_text("updates")
    page.screenshot(path=artifacts_dir / "chart-1s.png", full_page=True)
    assert page.foreign == []  # nothing from another host: the library is vendored

    page.click("#chart-close")
    expect(page.locator("#chart-panel")).to_be_hidden()
