"""The real system: a private redis-server, the real producer and the real gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from shared.keys import Keys
from tests.helpers.poll import wait_for, wait_until
from tests.helpers.sse import open_stream
from tests.helpers.support import Service, free_port, running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
STREAM = "/api/stream/prices"
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TICKERS = ("AAPL", "MSFT", "TSLA", "NVDA")


@dataclass
class System:
    url: str
    keys: Keys
    redis: redis.Redis
    producer: Service
    gateway: Service


@contextlib.contextmanager
def start_system(redis_url: str, logs: Path, **env: str) -> Iterator[System]:
    """Producer and gateway on ``redis_url`` under a fresh namespace."""
    namespace = f"sys-{uuid.uuid4().hex[:8]}"
    port = free_port()
    base = {"REDIS_URL": redis_url, "PRICEFEED_NAMESPACE": namespace,
            "PRICEFEED_TICK_INTERVAL": "0.1", "PRICEFEED_TICKERS": ",".join(TICKERS)}
    for name in ("PRICEFEED_TICK_INTERVAL", "PRICEFEED_TICKERS"):
        base[name] = env.pop(name, base[name])
    gateway_env = {**base, "PRICEFEED_PORT": str(port), "PRICEFEED_API_TOKEN": TOKEN, **env}
    client = redis.Redis.from_url(redis_url)
    with (running(["producer"], base, logs / f"{namespace}-producer.log") as producer,
          running(["gateway"], gateway_env, logs / f"{namespace}-gateway.log") as gateway):
        system = System(f"http://127.0.0.1:{port}", Keys(namespace), client, producer, gateway)
        wait_for(lambda: _ready(system), timeout_s=20, what="gateway ready")
        yield system
    client.close()


def _ready(system: System) -> bool:
    assert system.gateway.alive(), system.gateway.output()
    assert system.producer.alive(), system.producer.output()
    try:
        return httpx.get(system.url + "/api/ready").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def system(redis_url: str, tmp_path_factory) -> Iterator[System]:
    """One system for the module's tests (each opens and closes its own streams)."""
    env = {"PRICEFEED_MAX_CLIENTS": "6", "PRICEFEED_SEND_TIMEOUT": "1",
           "PRICEFEED_PING_INTERVAL": "0.5"}
    logs = Path(__file__).resolve().parents[1] / "artifacts"
    logs.mkdir(exist_ok=True)
    with start_system(redis_url, logs, **env) as started:
        yield started


async def test_three_clients_receive_the_same_sequence(system):
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        async with (open_stream(client, STREAM) as a, open_stream(client, STREAM) as b,
                    open_stream(client, STREAM) as c):
            # The snapshots may differ by a tick; from the first live seq all three agree.
            firsts = [await s.event() for s in (a, b, c)]
            start = max(f.position[1] for f in firsts) + 100
            got = []
            for sse in (a, b, c):
                blocks = await sse.updates_until(lambda blk: blk.position[1] > start,
                                                 timeout_s=10)
                got.append([(blk.id, blk.data) for blk in blocks if blk.position[1] > start - 60])
            tail = min(len(g) for g in got)
            assert tail >= 3
            assert got[0][-tail:] == got[1][-tail:] == got[2][-tail:]


async def test_filter_streams_only_the_requested_tickers(system):
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        async with open_stream(client, STREAM, params={"tickers": "aapl,TSLA"}) as sse:
            for _ in range(10):
                event = await sse.event()
                assert set(event.json()) <= {"AAPL", "TSLA"}
                assert event.json()


async def test_resume_after_missing_ticks_sends_only_newer(system):
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        async with open_stream(client, STREAM) as sse:
            last = await sse.event()
        _, last_pos, _ = last.position
        missed = last_pos + 3 * len(TICKERS)
        await wait_until(lambda: int(system.redis.get(system.keys.seq)) > missed, what="ticks")
        async with open_stream(client, STREAM, headers={"Last-Event-ID": last.id}) as sse:
            first = await sse.event()
            updates = first.json()
            assert set(updates) == set(TICKERS)  # every ticker moved since
            assert all(u["seq"] > last_pos for u in updates.values())
            assert first.position[2] == last_pos  # it follows where the client left off
            assert first.position[1] == max(u["seq"] for u in updates.values())
            assert (await sse.event()).position[2] == first.position[1]


async def test_watchlist_add_streams_within_2s_and_remove_stops_it(system):
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        async with open_stream(client, STREAM) as sse:
            await sse.event()
            added_at = time.monotonic()
            assert (await client.post("/api/watchlist", json={"ticker": "pypl"},
                                      headers=AUTH)).status_code == 201
            await sse.updates_until(lambda blk: "PYPL" in blk.json(), timeout_s=2)
            assert time.monotonic() - added_at < 2
            removed = await client.delete("/api/watchlist/PYPL", headers=AUTH)
            assert removed.status_code == 204
            removed_at = time.monotonic()
            seen_after: list[tuple[float, bool]] = []
            while len(seen_after) < 10:
                event = await sse.event()
                seen_after.append((time.monotonic() - removed_at, "PYPL" in event.json()))
            # At most a tick already in flight may still carry it.
            assert not any(has for _, has in seen_after[3:])
        listed = (await client.get("/api/watchlist")).json()
        assert "PYPL" not in {row["ticker"] for row in listed}


async def test_writes_without_the_token_get_401(system):
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        refused = await client.post("/api/watchlist", json={"ticker": "IBM"})
        assert refused.status_code == 401
        assert refused.json()["detail"]
        assert (await client.delete("/api/watchlist/AAPL")).status_code == 401
        assert not system.redis.sismember(system.keys.watchlist, "IBM")


async def test_past_the_client_limit_503(system):
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(6):
                sse = await stack.enter_async_context(open_stream(client, STREAM))
                await sse.block()
            refused = await client.get(STREAM)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) > 0
        async def admitted() -> bool:
            async with client.stream("GET", STREAM) as response:
                return response.status_code == 200
        await wait_until(admitted, what="a slot after streams closed")


def _never_reading_client(url: str) -> socket.socket:
    """Opens a stream and never reads it; its receive buffer is as small as Linux allows."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {STREAM} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def _dropped(system: System) -> int:
    text = httpx.get(system.url + "/metrics").text
    prefix = "pricefeed_gateway_clients_dropped"
    line = next(row for row in text.splitlines() if row.startswith(prefix))
    return int(float(line.split()[1]))


@pytest.fixture
def busy_system(redis_url: str, artifacts_dir: Path) -> Iterator[System]:
    """40 tickers at 20 Hz (~140 KB/s per client): a stuck socket fills in about a second."""
    env = {"PRICEFEED_SEND_TIMEOUT": "1", "PRICEFEED_TICK_INTERVAL": "0.05",
           "PRICEFEED_TICKERS": ",".join(f"T{i:02d}" for i in range(40))}
    with start_system(redis_url, artifacts_dir, **env) as started:
        yield started


async def test_a_client_that_never_reads_is_dropped_and_delays_no_one(busy_system):
    system = busy_system
    before = _dropped(system)
    stuck = [_never_reading_client(system.url) for _ in range(3)]
    try:
        async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
            async with open_stream(client, STREAM) as sse:
                await sse.event()
                deadline = time.monotonic() + 20
                gaps = []
                last = time.monotonic()
                while _dropped(system) < before + 3:
                    assert time.monotonic() < deadline, "never-reading clients were not dropped"
                    await sse.event(timeout_s=1)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now
                # Ticks every 0.05 s: the reader never waited on the stuck ones.
                assert max(gaps) < 0.6, max(gaps)
        for sock in stuck:
            sock.settimeout(5)
            while sock.recv(65536):
                pass  # what the kernel held, then EOF: the gateway closed it
        log = system.gateway.output()
        assert "ERROR" not in log and log.count("dropped a client") == 1, log  # throttled
    finally:
        for sock in stuck:
            sock.close()


async def test_redis_restart_recovers_subscription_and_resends_a_snapshot(
    redis_server_factory, artifacts_dir
):
    server = redis_server_factory()
    env = {"PRICEFEED_PING_INTERVAL": "0.3"}
    with start_system(server.url, artifacts_dir, **env) as system:
        async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
            async with open_stream(client, STREAM) as sse:
                await sse.event()
                server.stop()
                await wait_until(_status(client, 503), timeout_s=10, what="ready says 503")
                ping = await sse.block(timeout_s=3)  # the stream stays open meanwhile
                while ping.data is not None:
                    ping = await sse.block(timeout_s=3)
                assert ping.comments
                await asyncio.to_thread(server.start)
                # Redis came back empty (no persistence): the next event holds every ticker.
                event = await sse.updates_until(
                    lambda blk: set(blk.json()) == set(TICKERS), timeout_s=15)
                assert event
                await wait_until(_status(client, 200), timeout_s=15, what="ready again")
                metrics = (await client.get("/metrics")).text
                assert "pricefeed_gateway_redis_reconnects_total 0.0" not in metrics


def _status(client: httpx.AsyncClient, code: int):
    async def check() -> bool:
        return (await client.get("/api/ready")).status_code == code

    return check
