"""Entitlements on the bar paths of a whole real system (producer making bars, gateway in
jwt mode): `event: bar` and `GET /api/bars/{ticker}` show only the token's tickers."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway.access.conftest import hs256, jwt_env
from tests.helpers.sse import events
from tests.helpers.system import system

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_bar_events_and_the_bars_api_show_only_entitled_tickers(redis_url):
    token = hs256(tickers=["AAPL", "TSLA"])
    with system(redis_url, **jwt_env()) as sys, httpx.Client(base_url=sys.urls[0],
                                                             timeout=10) as client:
        assert client.get("/api/bars/AAPL", params={"interval": "1s"}).status_code == 401
        r = client.get("/api/bars/MSFT", params={"interval": "1s", "access_token": token})
        assert r.status_code == 403 and "MSFT" in r.json()["detail"]
        prices, bars = set(), set()
        params = {"bars": "1s", "access_token": token}
        with client.stream("GET", "/api/stream/prices", params=params) as response:
            assert response.status_code == 200
            deadline = time.monotonic() + 3.0  # three 1 s bars close at the 10 Hz simulator
            for event in events(response):
                if event.event == "bar":
                    bars |= set(event.json()["bars"])
                else:
                    prices |= set(event.json())
                if time.monotonic() > deadline and bars:
                    break
        assert prices == {"AAPL", "TSLA"} and bars <= {"AAPL", "TSLA"} and bars, (prices, bars)
        r = client.get("/api/bars/AAPL", params={"interval": "1s"},
                       headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["bars"], r.text
