"""The real `pricefeed producer` process taking prices from local Massive stand-ins."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from shared.codec import decode_update, encode_control
from shared.keys import Keys
from shared.models import PriceUpdate
from tests.helpers.massive import (
    API_KEY,
    FakeMassiveHTTP,
    FakeMassiveWS,
    snapshot_entry,
    trade,
    unauthorized,
)
from tests.helpers.poll import wait_for, wait_until
from tests.helpers.support import Service, running

pytestmark = [pytest.mark.massive, pytest.mark.e2e, pytest.mark.integration]

# Recent trade times (the market is open): in ns as the REST API sends them, ms on the
# feed; set per test, as a value taken at collection would be long past when it runs.
T0_NS = T0_MS = 0


@pytest.fixture(autouse=True)
def _recent_trade_time() -> None:
    global T0_NS, T0_MS
    T0_NS = (int(time.time()) - 5) * 10**9 + 123_456_789
    T0_MS = T0_NS // 10**6


def latest(client: redis.Redis, keys: Keys) -> dict[str, PriceUpdate]:
    return {k.decode(): decode_update(v) for k, v in client.hgetall(keys.latest).items()}


def status(client: redis.Redis, keys: Keys) -> dict:
    raw = client.get(keys.producer_status)
    return json.loads(raw) if raw else {}


def assert_key_not_shown(service: Service, client: redis.Redis, keys: Keys) -> None:
    assert API_KEY not in service.output()
    assert API_KEY.encode() not in (client.get(keys.producer_status) or b"")


def log_file(artifacts_dir: Path, namespace: str, name: str) -> Path:
    return artifacts_dir / f"massive-{namespace}-{name}.log"


def test_producer_fills_the_cache_from_the_rest_snapshot(
        sredis: redis.Redis, service_env: dict[str, str], namespace: str,
        artifacts_dir: Path, massive_http: FakeMassiveHTTP) -> None:
    keys = Keys(namespace)
    massive_http.serve(snapshot_entry("AAPL", 190.12, T0_NS),
                       snapshot_entry("MSFT", 420.5, T0_NS + 10**9),
                       snapshot_entry("TSLA", 250.25, T0_NS + 2 * 10**9))
    # PRICEFEED_LOG_LEVEL=DEBUG: even debug output must not show the key
    env = {**service_env, "MASSIVE_API_KEY": API_KEY,
           "PRICEFEED_MASSIVE_BASE_URL": massive_http.url, "PRICEFEED_POLL_INTERVAL": "1",
           "PRICEFEED_TICKERS": "AAPL,MSFT", "PRICEFEED_LOG_LEVEL": "DEBUG"}
    with running(["producer"], env, log_file(artifacts_dir, namespace, "rest")) as service:
        cache = wait_for(lambda: len(latest(sredis, keys)) == 2 and latest(sredis, keys),
                         what="AAPL and MSFT in the cache")
        assert (cache["AAPL"].price, cache["MSFT"].price) == (190.12, 420.5)
        assert cache["AAPL"].timestamp == pytest.approx(T0_NS / 1e9, abs=1e-6)
        assert cache["MSFT"].timestamp == pytest.approx(T0_NS / 1e9 + 1, abs=1e-6)
        # The day's change is measured from the previous close in the snapshot.
        assert cache["AAPL"].reference_price == round(190.12 - 1.25, 2)
        wait_for(lambda: status(sredis, keys).get("state") == "ok", what="state ok")
        assert status(sredis, keys)["source"] == "massive-rest"
        assert status(sredis, keys)["feed"] == "real time"

        massive_http.serve(snapshot_entry("AAPL", 191.0, T0_NS + 3 * 10**9))
        sredis.sadd(keys.watchlist, "TSLA")
        sredis.publish(keys.control, encode_control("add", "TSLA"))
        cache = wait_for(lambda: (c := latest(sredis, keys)).get("TSLA") and
                         c["AAPL"].price == 191.0 and c, what="the next poll")
        assert cache["AAPL"].previous_price == 190.12 and cache["AAPL"].direction == "up"
        assert cache["TSLA"].timestamp == pytest.approx(T0_NS / 1e9 + 2, abs=1e-6)

        massive_http.then(unauthorized())  # the key is revoked: readiness must show it
        wait_for(lambda: status(sredis, keys).get("state") == "auth_rejected",
                 what="auth_rejected in the producer status")
        assert_key_not_shown(service, sredis, keys)
        assert service.stop() == 0
    output = service.log_path.read_text()
    assert API_KEY not in output
    assert output.count("rejected the API key") == 1


async def test_producer_streams_trades_from_the_websocket(
        sredis: redis.Redis, service_env: dict[str, str], namespace: str,
        artifacts_dir: Path, massive_ws: FakeMassiveWS) -> None:
    keys = Keys(namespace)
    env = {**service_env, "MASSIVE_API_KEY": API_KEY, "PRICEFEED_MASSIVE_MODE": "websocket",
           "PRICEFEED_MASSIVE_WS_URL": massive_ws.url, "PRICEFEED_TICKERS": "AAPL,MSFT",
           "PRICEFEED_TICK_INTERVAL": "0.1", "PRICEFEED_LOG_LEVEL": "DEBUG"}
    with running(["producer"], env, log_file(artifacts_dir, namespace, "ws")) as service:
        await massive_ws.wait_until(lambda: massive_ws.subscribed == {"T.AAPL", "T.MSFT"})
        await massive_ws.send(trade("AAPL", 190.0, T0_MS), trade("AAPL", 190.5, T0_MS + 7),
                              trade("MSFT", 420.25, T0_MS))
        await wait_until(lambda: len(latest(sredis, keys)) == 2, what="both in the cache")
        cache = latest(sredis, keys)
        assert cache["AAPL"].price == 190.5
        assert cache["AAPL"].timestamp == pytest.approx((T0_MS + 7) / 1000)
        assert cache["MSFT"].price == 420.25
        # The reference is the first trade published today (190.0, or 190.5 when both
        # trades fell into one tick), kept in Redis for a restart.
        day = time.strftime("%Y-%m-%d", time.gmtime(cache["AAPL"].timestamp))
        kept = float(sredis.hget(keys.reference(day), "AAPL"))
        assert cache["AAPL"].reference_price == kept and kept in (190.0, 190.5)
        await wait_until(lambda: status(sredis, keys).get("state") == "ok", what="state ok")
        assert status(sredis, keys)["source"] == "massive-websocket"

        await massive_ws.close_clients()  # a clean close: the producer must come back
        await massive_ws.wait_until(lambda: len(massive_ws.connections) == 2
                                    and massive_ws.subscribed == {"T.AAPL", "T.MSFT"})
        await massive_ws.send(trade("MSFT", 421.0, T0_MS + 1000))
        await wait_until(lambda: latest(sredis, keys)["MSFT"].price == 421.0, what="MSFT 421")
        assert_key_not_shown(service, sredis, keys)
        assert service.stop() == 0
    assert API_KEY not in service.log_path.read_text()
