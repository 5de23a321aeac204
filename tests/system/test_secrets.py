"""Scenario 14: with MASSIVE_API_KEY (and PRICEFEED_API_TOKEN) set to recognisable values,
the system runs through errors — a rejected key (a local fake Massive) and Redis down — and
no log line, error body, metric or page contains either value."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.massive import FakeMassiveHTTP
from tests.helpers.poll import wait_for
from tests.helpers.system import status, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

KEY = "pk_LEAKCHECK_7c41e9d0b2"
TOKEN = "tok_LEAKCHECK_55aa31"
PATHS = ["/", "/metrics", "/api/ready", "/api/health", "/api/prices", "/api/prices/NOPE",
         "/api/watchlist", "/api/nothing-here", "/api/stream/prices?tickers=bad%20one"]


@pytest.fixture
def massive() -> Iterator[FakeMassiveHTTP]:
    server = FakeMassiveHTTP().start()
    try:
        yield server
    finally:
        server.close()


def _everything(url: str) -> list[str]:
    """Every page, body and header the gateway answers, good or bad requests."""
    out = []
    with httpx.Client(base_url=url, timeout=5) as client:
        for path in PATHS:
            response = client.get(path)
            out.append(f"{path} {response.status_code} {response.headers} {response.text}")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN[:5]}):
            for body in ({"ticker": "IBM"}, {"ticker": "bad one"}, {"nope": 1}):
                response = client.post("/api/watchlist", json=body, headers=headers)
                out.append(f"POST {response.status_code} {response.headers} {response.text}")
    return out


def test_the_key_and_token_never_show_in_logs_bodies_metrics_or_pages(
    redis_server_factory, massive
):
    server = redis_server_factory()
    env = {"MASSIVE_API_KEY": KEY, "PRICEFEED_MASSIVE_BASE_URL": massive.url,
           "PRICEFEED_POLL_INTERVAL": "1", "PRICEFEED_API_TOKEN": TOKEN,
           "PRICEFEED_LOG_LEVEL": "DEBUG"}
    with system(server.url, **env) as sys:
        url = sys.urls[0]
        # The key really was sent, and refused (the producer then waits a minute to retry).
        wait_for(lambda: any(r.authorization == f"Bearer {KEY}" for r in massive.seen()),
                 15, what="the fake Massive refusing the key")
        wait_for(lambda: b"auth" in (sys.redis().get(sys.keys.producer_status) or b""), 10,
                 what="the producer reporting the rejected key")
        seen = _everything(url)
        server.stop()
        wait_for(lambda: status(url, "/api/ready") == 503, 10, what="ready says 503")
        seen += _everything(url)
        assert all(s.alive() for s in [*sys.producers, *sys.gateways])
    logs = [s.log_path.read_text() for s in [*sys.producers, *sys.gateways]]
    assert "MASSIVE_API_KEY" in logs[0] and "Redis" in logs[1]  # the errors were logged
    for text in [*seen, *logs]:
        assert KEY not in text and TOKEN not in text, text[:500]
