"""REST, readiness, metrics and limits, in process under the app's lifespan (fakeredis)."""

from __future__ import annotations

import logging

import orjson
import pytest

from shared.codec import decode_control
from shared.settings import Secret, Settings
from shared.version import VERSION
from tests.helpers.poll import wait_until


async def test_prices_snapshot_and_one_price(api, fake_producer):
    await fake_producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with api() as (client, _):
        all_prices = (await client.get("/api/prices")).json()
        assert set(all_prices) == {"AAPL", "MSFT"}
        assert all_prices["AAPL"]["price"] == 190.0
        one = await client.get("/api/prices/aapl")
        assert one.status_code == 200
        assert list(one.json()) == [
            "ticker", "price", "previous_price", "timestamp",
            "change", "change_percent", "direction", "seq",
        ]
        missing = await client.get("/api/prices/ZZZZ")
        assert missing.status_code == 404
        assert "ZZZZ" in missing.json()["detail"]


async def test_watchlist_add_list_remove_with_control_messages(api, fake_producer):
    await fake_producer.atick({"AAPL": 190.0})
    control = fake_producer.client.pubsub()
    await control.subscribe(fake_producer.keys.control)
    async with api() as (client, _):
        added = await client.post("/api/watchlist", json={"ticker": "  aapl "})
        assert added.status_code == 201
        assert added.json() == {"ticker": "AAPL", "price": 190.0}
        again = await client.post("/api/watchlist", json={"ticker": "AAPL"})
        assert again.status_code == 201
        new = await client.post("/api/watchlist", json={"ticker": "pypl"})
        assert new.json() == {"ticker": "PYPL", "price": None}
        listed = (await client.get("/api/watchlist")).json()
        assert listed == [{"ticker": "AAPL", "price": 190.0}, {"ticker": "PYPL", "price": None}]
        assert (await client.delete("/api/watchlist/pypl")).status_code == 204
        gone = await client.delete("/api/watchlist/PYPL")
        assert gone.status_code == 404
        assert "PYPL" in gone.json()["detail"]
    messages = []
    await wait_until(lambda: _drain(control, messages), what="control messages")
    assert messages == [("add", "AAPL"), ("add", "PYPL"), ("remove", "PYPL")]
    await control.aclose()


async def _drain(pubsub, out) -> bool:
    while (m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.01)):
        out.append(decode_control(m["data"]))
    return len(out) >= 3


async def test_invalid_inputs_get_json_422_naming_the_problem(api):
    async with api() as (client, _):
        bad = await client.post("/api/watchlist", json={"ticker": "not a ticker!"})
        assert bad.status_code == 422
        assert "ticker" in bad.text
        missing_field = await client.post("/api/watchlist", json={})
        assert missing_field.status_code == 422
        assert missing_field.json()["detail"][0]["loc"][-1] == "ticker"
        not_json = await client.post(
            "/api/watchlist", content=b"{", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 422
        assert (await client.get("/api/stream/prices?tickers=A$B")).status_code == 422
        too_many = await client.get("/api/stream/prices", params={"tickers": ",".join(
            f"T{i}" for i in range(101))})
        assert too_many.status_code == 422
        assert "at most 100" in too_many.json()["detail"]


async def test_watchlist_cap(api):
    async with api(max_watchlist=2) as (client, _):
        for ticker in ("A", "B"):
            assert (await client.post("/api/watchlist", json={"ticker": ticker})).status_code == 201
        full = await client.post("/api/watchlist", json={"ticker": "C"})
        assert full.status_code == 422
        assert "full" in full.json()["detail"]
        assert (await client.post("/api/watchlist", json={"ticker": "A"})).status_code == 201


async def test_writes_need_the_bearer_token_when_one_is_set(api):
    async with api(api_token=Secret("s3cret")) as (client, _):
        assert (await client.post("/api/watchlist", json={"ticker": "X"})).status_code == 401
        wrong = await client.post(
            "/api/watchlist", json={"ticker": "X"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        assert wrong.json()["detail"]
        assert (await client.delete("/api/watchlist/X")).status_code == 401
        ok = await client.post(
            "/api/watchlist", json={"ticker": "X"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 201
        assert (await client.get("/api/watchlist")).status_code == 200


async def test_unknown_routes_methods_and_big_bodies_answer_json(api):
    async with api() as (client, _):
        for response, status in (
            (await client.get("/api/nothing"), 404),
            (await client.put("/api/watchlist"), 405),
            (await client.post("/api/watchlist", content=b"x" * 5000,
                               headers={"content-type": "application/json"}), 413),
            (await client.get("/static/absent.js"), 404),
            (await client.get("/static/../app.py"), 404),
        ):
            assert response.status_code == status
            assert response.headers["content-type"].startswith("application/json")
            assert response.json()["detail"]


async def test_chunked_body_over_the_limit_is_refused(api):
    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    async with api() as (client, _):
        response = await client.post("/api/watchlist", content=chunks())
        assert response.status_code == 413


async def test_ready_reports_producer_heartbeat_and_status(api, fake_producer):
    async with api() as (client, _):
        down = await client.get("/api/ready")
        assert down.status_code == 503
        assert "producer" in down.json()["reason"]
        await fake_producer.aheartbeat(orjson.dumps({"source": "massive-rest", "state": "ok"}))
        up = await client.get("/api/ready")
        assert up.status_code == 200
        assert up.json()["producer"] == {"source": "massive-rest", "state": "ok"}
        assert (await client.get("/api/health")).json() == {"status": "ok", "version": VERSION}


@pytest.mark.parametrize("state,detail,code,reason", [
    ("auth_rejected", "Massive rejected the API key (HTTP 401)", 503,
     "price source not producing: key rejected (Massive rejected the API key (HTTP 401))"),
    ("unreachable", None, 503, "price source not producing: source unreachable"),
    ("starting", None, 503, "price source not producing: starting"),
    ("market_closed", None, 200, None),  # quiet, not broken
])
async def test_ready_says_so_when_the_price_source_produces_nothing(
        api, fake_producer, state, detail, code, reason):
    async with api() as (client, _):
        status = {"source": "massive-rest", "state": state, "detail": detail}
        await fake_producer.aheartbeat(orjson.dumps(status))
        answer = await client.get("/api/ready")
        assert answer.status_code == code
        assert answer.json().get("reason") == reason and answer.json()["producer"] == status


async def test_cors_only_for_configured_origins(api):
    async with api(cors_origins=("https://ok.example",)) as (client, _):
        allowed = await client.get("/api/prices", headers={"Origin": "https://ok.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://ok.example"
        other = await client.get("/api/prices", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    async with api() as (client, _):
        none = await client.get("/api/prices", headers={"Origin": "https://ok.example"})
        assert "access-control-allow-origin" not in none.headers


async def test_metrics_count_malformed_messages_and_expose_gauges(api, fake_producer):
    async with api() as (client, app):
        await fake_producer.client.publish(fake_producer.keys.prices, b"{not json")
        await fake_producer.client.publish(fake_producer.keys.prices, b'{"AAPL": {"price": 1}}')
        await wait_until(lambda: app.state.gateway.stats.malformed == 2, what="malformed count")
        await fake_producer.atick({"AAPL": 190.0})
        await wait_until(lambda: app.state.gateway.stats.ticks == 1, what="tick after bad ones")
        text = (await client.get("/metrics")).text
    for name in (
        "pricefeed_gateway_malformed_messages_total 2.0",
        "pricefeed_gateway_ticks_total 1.0",
        "pricefeed_gateway_open_streams 0.0",
        "pricefeed_gateway_hub_subscriptions 1.0",
        "pricefeed_gateway_background_tasks 7.0",
        "pricefeed_gateway_events_sent_total",
        "pricefeed_gateway_updates_sent_total",
        "pricefeed_gateway_updates_conflated_total",
        "pricefeed_gateway_clients_dropped_slow_total",
        "pricefeed_gateway_redis_reconnects_total",
        "pricefeed_gateway_newest_update_age_seconds",
    ):
        assert name in text, name


@pytest.mark.parametrize(
    "host,token,warned",
    [("0.0.0.0", "", True), ("::", "", True), ("192.0.2.7", "", True),
     ("0.0.0.0", "tok-1", False), ("127.0.0.1", "", False), ("localhost", "", False),
     ("::1", "", False)],
)
def test_binding_beyond_loopback_without_a_token_warns_once_and_names_the_token(
        host, token, warned, caplog):
    from gateway.server import warn_if_exposed

    with caplog.at_level(logging.WARNING, logger="gateway.server"):
        warn_if_exposed(Settings(host=host, api_token=Secret(token)))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == int(warned), lines
    if warned:
        assert "PRICEFEED_API_TOKEN" in lines[0] and host in lines[0]


async def test_the_readme_alerts_and_metric_table_name_metrics_the_gateway_serves(api):
    import re

    import yaml

    from tests.helpers.support import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Running in production"):readme.index("## Troubleshooting")]
    blocks = re.findall(r"^```yaml\n(.*?)^```", section, re.S | re.M)
    scrape, alerts = (yaml.safe_load(b) for b in blocks)
    assert scrape["scrape_configs"][0]["job_name"] == "pricefeed"
    named = {m for rule in alerts["groups"][0]["rules"]
             for m in re.findall(r"pricefeed_gateway_\w+", rule["expr"])}
    named |= set(re.findall(r"`(pricefeed_gateway_\w+)`", section))
    assert len(named) >= 7, named
    async with api() as (client, _app):
        text = (await client.get("/metrics")).text
    served = set(re.findall(r"^(pricefeed_gateway_\w+)[ {]", text, re.M))
    assert named <= served, named - served
