"""A delayed entitlement against a whole real system: every price a client gets, on the
stream and on REST, is about ``delay_s`` old, and says it is delayed."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway.access.conftest import hs256, jwt_env
from tests.helpers.poll import wait_for
from tests.helpers.sse import events
from tests.helpers.system import system

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
DELAY_S = 2.0


def test_a_delayed_client_gets_prices_delay_s_old_everywhere(redis_url):
    token = hs256(tickers=["AAPL", "MSFT"], delay_s=DELAY_S)
    with system(redis_url, **jwt_env()) as sys, httpx.Client(base_url=sys.urls[0],
                                                             timeout=10) as client:
        wait_for(lambda: reaches_back(sys, DELAY_S + 0.5), 10, 0.1,
                 what="a tick log reaching back further than the delay")
        auth = {"Authorization": f"Bearer {token}"}
        seen = []  # (received at, event name, data)
        with client.stream("GET", "/api/stream/prices", params={"access_token": token}) as r:
            assert r.status_code == 200
            for event in events(r):
                seen.append((time.time(), event.event, event.json()))
                if len(seen) >= 15:  # 10 ticks a second: about 1.5 s of them
                    break
        assert {n for _, n, _ in seen} == {"delayed"}, seen[:3]
        for i, (at, _, data) in enumerate(seen):
            assert set(data) <= {"AAPL", "MSFT"}
            for update in data.values():
                age = at - update["timestamp"]
                # Never younger than the delay; after the snapshot, no older than the delay
                # plus the release period (0.25 s) and delivery on a busy machine.
                assert age >= DELAY_S - 0.05, (i, age)
                if i > 0:
                    assert age < DELAY_S + 1.0, (i, age)
        prices = client.get("/api/prices", headers=auth)
        assert prices.headers["x-pricefeed-delay"] == "2"
        now = time.time()
        assert set(prices.json()) == {"AAPL", "MSFT"}
        for update in prices.json().values():
            assert DELAY_S - 0.05 <= now - update["timestamp"] < DELAY_S + 1.0
        one = client.get("/api/prices/MSFT", headers=auth).json()
        assert time.time() - one["timestamp"] >= DELAY_S - 0.05
        assert client.get("/api/prices/TSLA", headers=auth).status_code == 403
        bars = client.get("/api/bars/AAPL", params={"interval": "1s"}, headers=auth).json()
        cutoff = time.time() - DELAY_S
        assert bars["bars"] and all(b["t"] + 1 <= cutoff + 0.01 and not b["partial"]
                                    for b in bars["bars"]), bars
        live = client.get("/api/bars/AAPL", params={"interval": "1s"},
                          headers={"Authorization": f"Bearer {hs256()}"}).json()
        assert live["bars"][-1]["t"] > bars["bars"][-1]["t"]  # the live client sees newer


def reaches_back(sys, seconds: float) -> bool:
    """True once the oldest entry of the tick log is at least ``seconds`` old."""
    oldest = sys.redis().xrange(sys.keys.ticks, "-", "+", count=1)
    return bool(oldest) and int(oldest[0][0].split(b"-")[1]) <= (time.time() - seconds) * 1000
