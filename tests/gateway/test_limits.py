"""Scenarios 12 and 13 against the real gateway process: every limit enforced with a JSON
answer (client limit 503 + Retry-After, tickers per stream, watchlist size, body size),
writes need the bearer token while reads stay open, and CORS answers only the configured
origins. (tests/gateway/test_api.py and test_stream.py check the same rules in-process.)"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.system import System, metrics, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

TOKEN = "limits-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD_ORIGIN, BAD_ORIGIN = "https://app.example", "https://evil.example"
ENV = {"PRICEFEED_MAX_CLIENTS": "4", "PRICEFEED_MAX_STREAM_TICKERS": "3",
       "PRICEFEED_MAX_WATCHLIST": "6", "PRICEFEED_API_TOKEN": TOKEN,
       "PRICEFEED_CORS_ORIGINS": GOOD_ORIGIN}


@pytest.fixture(scope="module")
def gateway(redis_url: str) -> Iterator[System]:
    with system(redis_url, **ENV) as started:
        yield started


def _json_error(response: httpx.Response, code: int) -> None:
    assert response.status_code == code, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]


def test_client_limit_is_503_with_retry_after_and_frees_up(gateway):
    url = gateway.urls[0]
    with httpx.Client(base_url=url, timeout=10) as client, contextlib.ExitStack() as stack:
        for _ in range(4):
            response = stack.enter_context(client.stream("GET", "/api/stream/prices"))
            assert response.status_code == 200
        refused = client.get("/api/stream/prices")
        _json_error(refused, 503)
        assert int(refused.headers["retry-after"]) > 0
        assert metrics(url)["pricefeed_gateway_clients_rejected_total"] >= 1
    with client_stream(url) as response:  # the streams closed: a slot again
        assert response.status_code == 200


@contextlib.contextmanager
def client_stream(url: str) -> Iterator[httpx.Response]:
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(50):  # the gateway notices closed streams within moments
            with client.stream("GET", "/api/stream/prices") as response:
                if response.status_code == 200:
                    yield response
                    return
        raise AssertionError("no slot after every stream closed")


def test_tickers_per_stream_watchlist_size_and_body_size(gateway):
    with httpx.Client(base_url=gateway.urls[0], timeout=10) as client:
        _json_error(client.get("/api/stream/prices", params={"tickers": "A,B,C,D"}), 422)
        with client.stream("GET", "/api/stream/prices", params={"tickers": "A,B,C"}) as ok:
            assert ok.status_code == 200
        assert client.post("/api/watchlist", json={"ticker": "IBM"}, headers=AUTH).status_code \
            == 201  # 5 defaults + IBM = the cap of 6
        _json_error(client.post("/api/watchlist", json={"ticker": "PYPL"}, headers=AUTH), 422)
        assert client.post("/api/watchlist", json={"ticker": "ibm"}, headers=AUTH).status_code \
            == 201  # adding twice is not an error, even when full
        big = b'{"ticker": "AAPL", "pad": "' + b"x" * 5000 + b'"}'
        _json_error(client.post("/api/watchlist", content=big, headers={
            **AUTH, "content-type": "application/json"}), 413)
        chunked = client.post("/api/watchlist", content=iter([big[:3000], big[3000:]]),
                              headers={**AUTH, "content-type": "application/json"})
        _json_error(chunked, 413)
        assert client.delete("/api/watchlist/IBM", headers=AUTH).status_code == 204


def test_writes_need_the_token_reads_stay_open_and_cors_is_per_origin(gateway):
    with httpx.Client(base_url=gateway.urls[0], timeout=10) as client:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            _json_error(client.post("/api/watchlist", json={"ticker": "IBM"}, headers=headers),
                        401)
            _json_error(client.delete("/api/watchlist/AAPL", headers=headers), 401)
        assert not gateway.redis().sismember(gateway.keys.watchlist, "IBM")
        for path in ("/api/watchlist", "/api/prices", "/api/prices/AAPL", "/"):
            assert client.get(path).status_code == 200, path
        with client.stream("GET", "/api/stream/prices") as stream:
            assert stream.status_code == 200
        preflight = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"}
        good = client.options("/api/watchlist", headers={"Origin": GOOD_ORIGIN, **preflight})
        assert good.headers["access-control-allow-origin"] == GOOD_ORIGIN
        bad = client.options("/api/watchlist", headers={"Origin": BAD_ORIGIN, **preflight})
        assert "access-control-allow-origin" not in bad.headers
        simple = client.get("/api/prices", headers={"Origin": BAD_ORIGIN})
        assert "access-control-allow-origin" not in simple.headers
