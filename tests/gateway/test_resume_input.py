"""Bad resume input never costs a 5xx, and a replay is bounded: the app under uvicorn in
this process on a real redis-server (README "Resume and continuity")."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import httpx
import pytest

from bench.contract_publisher import ContractWriter
from gateway.stream.resume import REPLAY_MAX_UPDATES
from shared.keys import Keys
from tests.helpers.gateway import served
from tests.helpers.poll import wait_until
from tests.helpers.sse import open_stream

pytestmark = pytest.mark.integration
STREAM = "/api/stream/prices"


@pytest.fixture
def producer(aredis, namespace) -> ContractWriter:
    return ContractWriter(aredis, Keys(namespace))


async def epoch_of(producer: ContractWriter) -> str:
    return (await producer.client.get(producer.keys.epoch)).decode()


async def test_every_bad_id_gets_a_reset_and_a_snapshot_never_a_5xx(settings, producer):
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    top = max(u.seq for u in (await producer.atick({"AAPL": 191.0})).values())
    epoch = await epoch_of(producer)
    bad = {
        "malformed": ["garbage", "-", "--", f"{epoch}-", f"{epoch}-x-1", "12-34-56",
                      f"{epoch.upper()}-{top}-0", f"{epoch}-{top}-0-0", "x y"],
        "forged": [f"{'0' * 16}-{top}-0", f"{epoch[::-1]}-{top}-0"],
        "huge": ["9" * 8000, f"{epoch}-{'9' * 4000}-0"],
        "future": [f"{epoch}-{top + 1}-0", f"{epoch}-{2**63}-0", f"{epoch}-9999999999999999999-0"],
        "before the log": [f"{epoch}-0-0"],
    }
    async with served(settings) as (url, app), httpx.AsyncClient(base_url=url) as client:
        for kind, ids in bad.items():
            for raw in ids:
                for how in ({"headers": {"Last-Event-ID": raw}},
                            {"params": {"last_event_id": raw}},
                            {"params": {"last_event_id": raw, "replay": "all"}}):
                    async with open_stream(client, STREAM, **how) as sse:  # asserts a 200
                        assert (await sse.event()).event == "reset", (kind, raw)
                        snapshot = await sse.event()
                        assert set(snapshot.json()) == {"AAPL", "MSFT"}
                        assert snapshot.position == (epoch, top, 0)
        assert app.state.gateway.stats.resets == 3 * sum(len(ids) for ids in bad.values())
        weird = {"params": {"last_event_id": "\x00\x7f\u2603"}}
        async with open_stream(client, STREAM, **weird) as sse:  # nothing the server trips on
            assert (await sse.event()).event == "reset"
        refused = await client.get(STREAM, params={"replay": "everything"})
        assert refused.status_code == 422 and "replay" in refused.json()["detail"]


async def test_a_replay_further_behind_than_the_cap_is_a_reset(settings, producer, aredis):
    await producer.atick({"AAPL": 190.0})
    epoch = await epoch_of(producer)
    start = max(u.seq for u in (await producer.atick({"AAPL": 191.0})).values())
    await aredis.incrby(producer.keys.seq, REPLAY_MAX_UPDATES)  # seqs far ahead
    await producer.atick({"AAPL": 192.0})
    last_id = f"{epoch}-{start}-0"
    async with served(settings) as (url, _), httpx.AsyncClient(base_url=url) as client:
        async with open_stream(client, STREAM, params={"replay": "all"},
                               headers={"Last-Event-ID": last_id}) as sse:
            assert (await sse.event()).event == "reset"
        async with open_stream(client, STREAM, headers={"Last-Event-ID": last_id}) as sse:
            resumed = await sse.event()  # the default mode has no such cap: latest values
            assert resumed.event is None and resumed.json()["AAPL"]["price"] == 192.0


async def test_a_replay_client_that_never_reads_is_dropped(settings, producer):
    tickers = [f"T{i}" for i in range(100)]
    await producer.atick({t: 100.0 for t in tickers})
    epoch = await epoch_of(producer)
    start = max(u.seq for u in (await producer.atick({t: 101.0 for t in tickers})).values())
    for i in range(400):  # ~9 MB of log to replay (under the cap): more than socket buffers
        await producer.atick({t: 100.0 + (i % 50) / 10 for t in tickers})
    quick = dataclasses.replace(settings, send_timeout_s=1.0)
    async with served(quick) as (url, app):
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
        sock.connect((host, int(port)))
        sock.sendall(f"GET {STREAM}?replay=all HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Last-Event-ID: {epoch}-{start}-0\r\n\r\n".encode())
        stats = app.state.gateway.stats
        await wait_until(lambda: stats.dropped_slow == 1, timeout_s=15, what="dropped")
        await wait_until(lambda: not app.state.hub.clients, what="unregistered")
        assert 0 < stats.replayed < 400 * 100  # it stopped early: nothing queued for it
        sock.close()
        async with httpx.AsyncClient(base_url=url) as client:  # the others are served
            async with open_stream(client, STREAM) as sse:
                assert len((await sse.event()).json()) == 100
        await asyncio.sleep(0)
