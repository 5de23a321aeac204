"""Regression tests for the bugs the reliability scenarios found, one per behaviour."""

from __future__ import annotations

import logging
import time

import httpx
import orjson
import pytest

from bench.contract_publisher import ContractWriter
from producer.watchlist import Watchlist
from shared.codec import decode_control, encode_map
from shared.errors import CodecError
from shared.keys import Keys
from shared.models import PriceUpdate
from shared.settings import Settings
from tests.helpers.gateway import served
from tests.helpers.poll import wait_until
from tests.helpers.sse import open_stream

pytestmark = [pytest.mark.reliability]

@pytest.mark.parametrize("action", [["add"], {"add": 1}, 5, None, True])
def test_a_control_message_whose_action_is_not_a_string_is_a_codec_error(action):

    with pytest.raises(CodecError):
        decode_control(orjson.dumps({"action": action, "ticker": "AAPL"}))


@pytest.mark.integration
async def test_a_tick_with_a_seq_no_producer_handed_out_is_dropped_and_hides_nothing(
    settings, aredis
):
    producer = ContractWriter(aredis, settings.keys)
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with served(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with open_stream(client, "/api/stream/prices") as sse:
                assert set((await sse.event()).json()) == {"AAPL", "MSFT"}
                forged = PriceUpdate.create("AAPL", 0.01, 190.0, time.time(), 2**62)
                await aredis.publish(settings.keys.prices, encode_map([forged]))
                await wait_until(lambda: app.state.gateway.stats.malformed == 1, what="count")
                await producer.atick({"AAPL": 191.0})
                event = (await sse.event()).json()
    assert event["AAPL"]["price"] == 191.0 and event["AAPL"]["seq"] < 2**62


async def test_a_flood_of_malformed_control_messages_logs_one_line_and_counts_them(
    fake_redis, caplog
):
    async def ignore(_ticker: str) -> None:
        raise AssertionError("a malformed message must change nothing")

    wl = Watchlist(fake_redis, Keys("flood"), ["AAPL"], 10, ignore, ignore)
    caplog.set_level(logging.WARNING, logger="producer.watchlist")
    for i in range(500):
        await wl.apply(b"not json" if i % 2 else b'{"action": "explode", "ticker": "AAPL"}')
    assert wl.malformed == 500
    assert len(caplog.records) == 1


@pytest.mark.integration
async def test_a_rest_call_while_redis_is_down_is_a_503_with_a_json_body(
    redis_server_factory, namespace, caplog
):
    server = redis_server_factory()
    settings = Settings(redis_url=server.url, namespace=namespace)
    async with served(settings) as (url, _app):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            server.stop()
            for _ in range(3):
                for response in (await client.get("/api/prices"),
                                 await client.get("/api/watchlist"),
                                 await client.get("/api/prices/AAPL"),
                                 await client.post("/api/watchlist", json={"ticker": "IBM"}),
                                 await client.delete("/api/watchlist/IBM")):
                    assert response.status_code == 503, response.text
                    assert response.json()["detail"] and response.headers["retry-after"]
    assert len([r for r in caplog.records if r.name == "gateway.redis_outage"]) == 1
