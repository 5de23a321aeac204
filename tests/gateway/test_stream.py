"""The SSE stream over real HTTP: the app under uvicorn in this process, real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import gc

import httpx
import pytest

from bench.contract_publisher import ContractWriter
from shared.keys import Keys
from tests.helpers.gateway import served
from tests.helpers.poll import wait_until
from tests.helpers.sse import open_stream

pytestmark = pytest.mark.integration
STREAM = "/api/stream/prices"


@pytest.fixture
def producer(aredis, namespace) -> ContractWriter:
    return ContractWriter(aredis, Keys(namespace))


async def test_retry_then_snapshot_then_changes(settings, producer):
    first = await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        async with open_stream(client, STREAM) as sse:
            assert (await sse.block()).retry == 1000
            snapshot = await sse.event()
            assert snapshot.json() == {t: u.to_dict() for t, u in first.items()}
            epoch = (await producer.client.get(producer.keys.epoch)).decode()
            assert snapshot.position == (epoch, first["MSFT"].seq, 0)  # follows nothing
            second = await producer.atick({"MSFT": 421.0})
            change = await sse.event()
            assert change.json() == {"MSFT": second["MSFT"].to_dict()}
            assert change.position == (epoch, second["MSFT"].seq, first["MSFT"].seq)


async def test_filter_narrows_snapshot_and_changes(settings, producer):
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0, "TSLA": 250.0})
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        async with open_stream(client, STREAM, params={"tickers": "aapl, tsla"}) as sse:
            assert set((await sse.event()).json()) == {"AAPL", "TSLA"}
            await producer.atick({"MSFT": 421.0})
            update = await producer.atick({"TSLA": 251.0, "MSFT": 422.0})
            change = await sse.event()
            assert change.json() == {"TSLA": update["TSLA"].to_dict()}


async def test_resume_sends_only_newer_tickers(settings, producer):
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        async with open_stream(client, STREAM) as sse:
            last_id = (await sse.event()).id
        missed = await producer.atick({"MSFT": 425.0})
        by_header = {"headers": {"Last-Event-ID": last_id}}
        by_query = {"params": {"last_event_id": last_id}}
        for how in (by_header, by_query):
            async with open_stream(client, STREAM, **how) as sse:
                resumed = await sse.event()
                assert resumed.json() == {"MSFT": missed["MSFT"].to_dict()}


async def test_resume_from_an_unusable_id_gets_a_reset_and_a_full_snapshot(settings, producer):
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    epoch = (await producer.client.get(producer.keys.epoch)).decode()
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        for bad_id in ("999999999", "garbage", f"{epoch}-999999999-1", "٣".encode()):
            headers = {"Last-Event-ID": bad_id}
            async with open_stream(client, STREAM, headers=headers) as sse:
                assert (await sse.event()).event == "reset"
                snapshot = await sse.event()
                assert set(snapshot.json()) == {"AAPL", "MSFT"} and snapshot.position[2] == 0


async def test_idle_streams_get_comment_pings(settings, producer):
    await producer.atick({"AAPL": 190.0})
    quick = dataclasses.replace(settings, ping_interval_s=0.1)
    async with served(quick) as (url, _), httpx.AsyncClient(base_url=url) as client:
        async with open_stream(client, STREAM) as sse:
            await sse.event()
            ping = await sse.block(timeout_s=2)
            assert ping.comments and ping.data is None


async def test_past_the_client_limit_503_with_retry_after(settings, producer):
    limited = dataclasses.replace(settings, max_clients=2)
    async with served(limited) as (url, app), httpx.AsyncClient(base_url=url) as client:
        async with open_stream(client, STREAM) as one, open_stream(client, STREAM) as two:
            await one.block()
            await two.block()
            refused = await client.get(STREAM)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) > 0
            assert refused.json()["detail"]
        await wait_until(lambda: not app.state.hub.clients, what="streams released")
        async with open_stream(client, STREAM) as again:
            assert (await again.block()).retry == 1000


@pytest.mark.parametrize("guarded", [True, False], ids=["our-protocol", "uvicorn-protocol"])
async def test_streams_opened_and_closed_leave_nothing_behind(settings, producer, guarded):
    async with (served(settings, guarded) as (url, app),
                httpx.AsyncClient(base_url=url) as client):
        async with open_stream(client, STREAM) as sse:  # starts sse-starlette's one watcher
            await sse.block()
        baseline = len(asyncio.all_tasks())
        # On our protocol no task per stream waits in receive() for the disconnect
        # (gateway/extensions.py ON_DISCONNECT): the server tells the stream itself.
        async with open_stream(client, STREAM) as sse:
            await sse.block()
            listeners = [t for t in asyncio.all_tasks()
                         if t.get_coro().__qualname__ == "PriceStream._listen"]
            assert len(listeners) == (0 if guarded else 1)
        for _ in range(20):
            async with open_stream(client, STREAM, params={"tickers": "AAPL"}) as sse:
                await sse.block()
        await wait_until(lambda: not app.state.hub.clients, what="clients unregistered")
        metrics = (await client.get("/metrics")).text
        assert "pricefeed_gateway_open_streams 0.0" in metrics
        assert "pricefeed_gateway_background_tasks 7.0" in metrics
        await wait_until(lambda: len(asyncio.all_tasks()) <= baseline, what="tasks ended")


async def test_the_page_stream_tells_the_source_and_the_watchlist_and_their_changes(
        settings, producer, aredis):
    keys = Keys(settings.namespace)
    await aredis.sadd(keys.watchlist, "AAPL", "MSFT")
    await producer.aheartbeat(b'{"source": "simulator", "state": "ok", "feed": "simulated"}')
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        async with open_stream(client, STREAM, {"events": "source,watchlist"}) as sse:
            snapshot = await sse.event()
            assert snapshot.event is None and set(snapshot.json()) == {"AAPL", "MSFT"}
            source, watchlist = await sse.event(), await sse.event()
            assert (source.event, source.id) == ("source", None)  # no id: resume stays a position
            assert source.json() == {"source": "simulator", "state": "ok", "feed": "simulated",
                                     "reference": None, "detail": None, "last_trade": None}
            assert (watchlist.event, watchlist.json()) == ("watchlist",
                                                           {"tickers": ["AAPL", "MSFT"]})

            added = await client.post("/api/watchlist", json={"ticker": "pypl"})
            assert added.status_code == 201
            change = await sse.event(timeout_s=5)  # pushed, not polled
            assert (change.event, change.json()) == (
                "watchlist", {"tickers": ["AAPL", "MSFT", "PYPL"]})
            assert (await client.delete("/api/watchlist/AAPL")).status_code == 204
            change = await sse.event(timeout_s=5)
            assert change.json() == {"tickers": ["MSFT", "PYPL"]}

            await producer.aheartbeat(b'{"source": "massive-rest", "state": "auth_rejected", '
                                     b'"detail": "Massive rejected the API key (HTTP 401)"}')
            change = await sse.event(timeout_s=5)
            assert change.event == "source" and change.json()["state"] == "auth_rejected"
            await aredis.delete(keys.producer)  # the producer is gone
            change = await sse.event(timeout_s=5)
            assert change.event == "source" and change.json()["state"] == "no_producer"


async def test_a_stream_that_asks_for_no_events_gets_prices_only(settings, producer):
    await producer.aheartbeat(b'{"source": "simulator", "state": "ok"}')
    await producer.atick({"AAPL": 190.0})
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        async with open_stream(client, STREAM) as sse:
            assert (await sse.event()).event is None  # the snapshot
            assert (await client.post("/api/watchlist", json={"ticker": "PYPL"})).is_success
            await producer.aheartbeat(b'{"source": "simulator", "state": "stopped"}')
            later = await producer.atick({"AAPL": 191.0})
            nxt = await sse.event()
            assert nxt.event is None and nxt.json() == {"AAPL": later["AAPL"].to_dict()}
        bad = await client.get(STREAM, params={"events": "source,gossip"})
        assert bad.status_code == 422 and "events" in bad.json()["detail"]


async def test_a_closed_stream_connection_is_freed_without_waiting_for_the_gc(
        settings, producer):
    # Our protocol's disconnect extension is a bound method of the protocol in the scope;
    # left there, each closed connection was a reference cycle only a full GC freed
    # (RSS grew 10 % in the churn test). gc.disable() makes the test see refcounting only.
    from gateway.protocol import GuardedProtocol

    await producer.atick({"AAPL": 190.0})
    async with served(settings) as (url, app):
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                async with (httpx.AsyncClient(base_url=url) as client,
                            open_stream(client, STREAM) as sse):
                    await sse.block()
            await wait_until(lambda: not app.state.hub.clients, what="streams ended")
            await wait_until(lambda: not any(isinstance(o, GuardedProtocol)
                                             for o in gc.get_objects()),
                             what="every closed connection's protocol freed")
        finally:
            gc.enable()
