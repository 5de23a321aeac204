"""``GET /api/bars/{ticker}`` and ``event: bar`` on the stream, with bars written by the real
publisher into a real Redis (README "Bars")."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from producer.publisher import BarOptions, Publisher
from producer.sources.base import PriceBatch
from shared.keys import Keys
from tests.helpers.gateway import served
from tests.helpers.sse import open_stream

pytestmark = pytest.mark.integration
TICKERS = ["AAPL", "MSFT"]
T0 = 1_764_064_800  # a minute boundary


async def producer(aredis, keys: Keys, forming_interval_s: float = 0.0) -> Publisher:
    await aredis.set(keys.lease, "test", ex=30)
    await aredis.sadd(keys.watchlist, *TICKERS, "IDLE")
    options = BarOptions({"1s": 3600, "1m": 86_400}, forming_interval_s)
    pub = Publisher(aredis, keys, "test", bars=options)
    pub.begin(TICKERS, {})
    await pub.restore_bars(TICKERS)
    return pub


async def tick(pub: Publisher, ts: float, prices: list[float]) -> None:
    await pub.publish(PriceBatch(TICKERS, np.array(prices), ts))
    await pub.settle()
    assert not pub.failure.done()


async def seconds(pub: Publisher, n: int, t0: float = T0) -> None:
    """Two ticks in each of ``n`` seconds: AAPL at 100 + s, then 100.5 + s."""
    for s in range(n):
        await tick(pub, t0 + s + 0.1, [100.0 + s, 200.0])
        await tick(pub, t0 + s + 0.6, [100.5 + s, 201.0])


async def test_bars_come_oldest_first_with_the_forming_bar_last(settings, aredis) -> None:
    pub = await producer(aredis, settings.keys)
    await seconds(pub, 5)
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        body = (await client.get("/api/bars/aapl", params={"interval": "1s"})).json()
        assert body["ticker"] == "AAPL" and body["interval"] == "1s"
        bars = body["bars"]
        assert [b["t"] for b in bars] == [T0 + s for s in range(5)]
        assert [b["partial"] for b in bars] == [False] * 4 + [True]
        assert bars[0] == {"t": T0, "o": 100.0, "h": 100.5, "l": 100.0, "c": 100.5, "n": 2,
                           "v": None, "partial": False}
        newest = (await client.get("/api/bars/AAPL?interval=1s&limit=2")).json()["bars"]
        assert [b["t"] for b in newest] == [T0 + 3, T0 + 4]
        since = (await client.get(f"/api/bars/AAPL?interval=1s&since={T0 + 1}&limit=2")).json()
        assert [b["t"] for b in since["bars"]] == [T0 + 1, T0 + 2]
        tail = (await client.get(f"/api/bars/AAPL?interval=1s&since={T0 + 3.5}")).json()
        assert [b["t"] for b in tail["bars"]] == [T0 + 4]
        minute = (await client.get("/api/bars/AAPL")).json()  # 1m by default
        assert minute["interval"] == "1m"
        assert minute["bars"] == [{"t": T0, "o": 100.0, "h": 104.5, "l": 100.0, "c": 104.5,
                                   "n": 10, "v": None, "partial": True}]
        idle = await client.get("/api/bars/IDLE")  # watched, no bar yet
        assert idle.status_code == 200 and idle.json()["bars"] == []


@pytest.mark.parametrize(("path", "status", "names"), [
    ("/api/bars/ZZZZ", 404, "ZZZZ"),
    ("/api/bars/bad!!", 422, "ticker"),
    ("/api/bars/AAPL?interval=5m", 422, "interval"),
    ("/api/bars/AAPL?interval=", 422, "interval"),
    ("/api/bars/AAPL?limit=0", 422, "limit"),
    ("/api/bars/AAPL?limit=5001", 422, "limit"),
    ("/api/bars/AAPL?limit=ten", 422, "limit"),
    ("/api/bars/AAPL?limit=2.5", 422, "limit"),
    ("/api/bars/AAPL?since=-1", 422, "since"),
    ("/api/bars/AAPL?since=nan", 422, "since"),
    ("/api/bars/AAPL?since=inf", 422, "since"),
    ("/api/bars/AAPL?since=yesterday", 422, "since"),
    ("/api/bars/AAPL?since=1e12", 422, "since"),
])
async def test_every_parameter_is_validated(settings, aredis, path, status, names) -> None:
    pub = await producer(aredis, settings.keys)
    await seconds(pub, 1)
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        response = await client.get(path)
        assert response.status_code == status, response.text
        assert names in response.text


async def test_the_route_and_its_parameters_are_in_the_openapi_document(settings) -> None:
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        doc = (await client.get("/openapi.json")).json()
    op = doc["paths"]["/api/bars/{ticker}"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"ticker", "interval", "limit", "since"}
    assert params["limit"]["schema"]["maximum"] == 5000
    assert params["limit"]["schema"]["default"] == 300
    assert "404" in op["responses"]


async def test_bar_events_arrive_on_the_stream_closes_and_forming(settings, aredis) -> None:
    pub = await producer(aredis, settings.keys)
    now = int(time.time())
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        params = {"tickers": "AAPL", "bars": "1s"}
        async with open_stream(client, "/api/stream/prices", params=params) as sse:
            await tick(pub, now + 0.1, [10.0, 20.0])
            await tick(pub, now + 0.5, [11.0, 20.0])
            await tick(pub, now + 1.2, [12.0, 20.0])  # closes the first second
            blocks = await sse.updates_until(
                lambda b: b.event == "bar" and not b.json()["bars"]["AAPL"]["partial"])
            closed = blocks[-1].json()
            assert closed == {"interval": "1s", "bars": {"AAPL": {
                "t": now, "o": 10.0, "h": 11.0, "l": 10.0, "c": 11.0, "n": 2, "v": None,
                "partial": False}}}
            assert blocks[-1].id is None  # Last-Event-ID stays the price seq
            forming = await sse.updates_until(lambda b: b.event == "bar", timeout_s=3)
            assert forming[-1].json()["bars"]["AAPL"] == {
                "t": now + 1, "o": 12.0, "h": 12.0, "l": 12.0, "c": 12.0, "n": 1, "v": None,
                "partial": True}
            assert all(b.event is None for b in forming[:-1])  # the rest are prices


async def test_a_bad_bars_parameter_is_422(settings) -> None:
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/api/stream/prices?bars=5m")
        assert response.status_code == 422
        assert "bars" in response.json()["detail"]
