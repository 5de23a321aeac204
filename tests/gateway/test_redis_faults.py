"""Regression tests: the gateway (and producer) processes against a private redis-server
whose config the test changes (maxmemory, client-output-buffer-limit, CLIENT KILL, idle
timeout), and the watchlist's cap and hygiene. One test per behaviour.

Each test owns its redis-server (never the machine's), so it may reconfigure it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import orjson
import pytest

from shared.keys import Keys
from shared.models import OUT_OF_MEMORY_STATE
from tests.helpers.gateway import served
from tests.helpers.poll import wait_for, wait_until
from tests.helpers.sse import open_stream
from tests.helpers.support import RedisServer, Service, free_port
from tests.helpers.system import LOGS, status

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

TICKERS = ("AAPL", "MSFT", "TSLA", "NVDA", "JPM")


class Deployment:
    """Real producer and gateway processes on one private redis-server."""

    def __init__(self, server: RedisServer, **env: str) -> None:
        self.server = server
        self.keys = Keys(f"rf-{uuid.uuid4().hex[:6]}")
        self.env = {"REDIS_URL": server.url, "PRICEFEED_NAMESPACE": self.keys.namespace,
                    "PRICEFEED_TICK_INTERVAL": "0.1", "PRICEFEED_TICKERS": ",".join(TICKERS),
                    **env}
        self.services: list[Service] = []
        self.urls: list[str] = []

    def _start(self, role: str, **env: str) -> Service:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"{self.keys.namespace}-{role}{len(self.services)}.log"
        svc = Service([role], {**self.env, **env}, log)
        self.services.append(svc)
        return svc

    def producer(self) -> Service:
        return self._start("producer")

    def gateway(self) -> Service:
        port = free_port()
        self.urls.append(f"http://127.0.0.1:{port}")
        return self._start("gateway", PRICEFEED_PORT=str(port))

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.stop()


@contextmanager
def deployment(server: RedisServer, producer: bool = True, gateways: int = 1,
               ready: bool = True, **env: str) -> Iterator[Deployment]:
    dep = Deployment(server, **env)
    try:
        if producer:
            dep.producer()
        for _ in range(gateways):
            dep.gateway()
        path = "/api/ready" if ready else "/api/health"
        for url in dep.urls:
            wait_for(lambda u=url: status(u, path) == 200, 30, 0.05, f"{url}{path}")
        yield dep
    finally:
        dep.stop()


def producer_state(dep: Deployment) -> str | None:
    raw = dep.server.client().get(dep.keys.producer_status)
    return None if raw is None else orjson.loads(raw)["state"]


def aapl_seq(dep: Deployment) -> int:
    return int(orjson.loads(dep.server.client().hget(dep.keys.latest, "AAPL"))["seq"])


async def test_redis_out_of_memory_keeps_reads_working_and_says_so(redis_server_factory):
    server = redis_server_factory()
    with deployment(server) as dep:
        url = dep.urls[0]
        client = server.client()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", used // 2)  # every write is refused from now on
        try:
            await wait_until(lambda: producer_state(dep) == OUT_OF_MEMORY_STATE, 10,
                             what="the producer's state")
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                prices = await http.get("/api/prices")
                assert prices.status_code == 200 and set(prices.json()) == set(TICKERS)
                assert (await http.get("/api/prices/AAPL")).status_code == 200
                assert (await http.get("/api/watchlist")).status_code == 200
                assert (await http.get("/api/bars/AAPL?interval=1s")).status_code == 200
                async with open_stream(http, "/api/stream/prices") as sse:  # a new client
                    assert set((await sse.event()).json()) == set(TICKERS)
                added = await http.post("/api/watchlist", json={"ticker": "IBM"})
                assert added.status_code == 503
                assert "Redis is out of memory" in added.json()["detail"]
                ready = await http.get("/api/ready")
                assert ready.status_code == 503 and "out of memory" in ready.json()["reason"]
                assert ready.json()["producer"]["state"] == OUT_OF_MEMORY_STATE
        finally:
            client.config_set("maxmemory", 0)
        await wait_until(lambda: producer_state(dep) == "ok", 10, what="the producer recovered")
        await wait_until(lambda: status(url, "/api/ready") == 200, 10, what="ready again")
        seq = aapl_seq(dep)
        await wait_until(lambda: aapl_seq(dep) > seq, 10, what="ticks written again")
        out = dep.services[0].output()
        assert out.count("Redis is out of memory") == 1, out
        assert "Traceback" not in out + dep.services[1].output()


def test_a_subscription_cut_on_every_tick_warns_with_a_count_and_degrades_readiness(
    redis_server_factory,
):
    server = redis_server_factory()
    many = ",".join(f"T{i:03d}" for i in range(496))  # a tick of ~80 KB
    with deployment(server, PRICEFEED_TICKERS=many, PRICEFEED_MAX_WATCHLIST="1000") as dep:
        url, gateway = dep.urls[0], dep.services[1]
        client = server.client()
        client.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 5")
        try:
            wait_for(lambda: "keeps dropping" in gateway.output(), 20, what="the WARNING")
            ready = httpx.get(url + "/api/ready", timeout=5)
            assert ready.status_code == 503 and "keeps dropping" in ready.json()["reason"]
            line = next(ln for ln in gateway.output().splitlines() if "keeps dropping" in ln)
            assert "WARNING" in line and "lost" in line and "times" in line
        finally:
            client.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
        wait_for(lambda: status(url, "/api/ready") == 200, 15, what="ready again")
        losses = gateway.output().count("Redis subscription lost")
        assert losses == 1  # the first loss; the rest went into the throttled count
        client.client_kill_filter(_type="pubsub")  # a later, single loss is news again
        wait_for(lambda: gateway.output().count("Redis subscription lost") == 2, 10,
                 what="a WARNING for the new loss")


async def _get_all(url: str, path: str, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=10,
                                 limits=httpx.Limits(max_connections=n)) as http:
        responses = await asyncio.gather(*(http.get(path) for _ in range(n)))
    return [r.status_code for r in responses]


async def _add_all(url: str, tickers: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=10,
                                 limits=httpx.Limits(max_connections=len(tickers))) as http:
        responses = await asyncio.gather(
            *(http.post("/api/watchlist", json={"ticker": t}) for t in tickers))
    return [r.status_code for r in responses]


def _normal_clients(server: RedisServer) -> int:
    return len(server.client().client_list(_type="normal"))


async def test_dead_pooled_connections_are_retried_so_no_request_fails(redis_server_factory):
    server = redis_server_factory()
    with deployment(server) as dep:
        url = dep.urls[0]
        client = server.client()
        assert await _get_all(url, "/api/prices/AAPL", 64) == [200] * 64  # fills the pool
        for round_ in range(3):
            client.client_kill_filter(_type="normal", skipme=True)
            codes = await _get_all(url, "/api/prices/AAPL", 64)
            assert codes == [200] * 64, (round_, codes)
            assert [status(url, "/api/ready") for _ in range(5)] == [200] * 5
        client.client_kill_filter(_type="normal", skipme=True)
        added = await _add_all(url, [f"X{i}" for i in range(50)])
        assert added == [201] * 50
        # Redis's idle timeout closes the pooled connections by itself.
        pooled = _normal_clients(server)
        client.config_set("timeout", 1)
        await wait_until(lambda: _normal_clients(server) < pooled - 10, 10,
                         what="idle conns closed")
        client.config_set("timeout", 0)
        assert await _get_all(url, "/api/prices/AAPL", 64) == [200] * 64
        assert status(url, "/api/ready") == 200
        # The subscription's own idle GET connection (NS:seq) was killed too; it is retried
        # as well, so the live subscription was never torn down.
        assert "subscription lost" not in dep.services[1].output()


async def test_the_watchlist_cap_holds_across_gateways_under_concurrent_adds(
    redis_server_factory,
):
    server = redis_server_factory()
    with deployment(server, producer=False, gateways=2, ready=False,
                    PRICEFEED_MAX_WATCHLIST="20") as dep:
        client = server.client()
        client.delete(dep.keys.watchlist)
        tickers = [f"C{i}" for i in range(100)]
        codes = await asyncio.gather(_add_all(dep.urls[0], tickers[:50]),
                                     _add_all(dep.urls[1], tickers[50:]))
        flat = codes[0] + codes[1]
        assert client.scard(dep.keys.watchlist) == 20
        assert flat.count(201) == 20 and flat.count(422) == 80, flat


async def test_injected_invalid_watchlist_members_are_hidden_and_deletable(settings, aredis):
    keys = settings.keys
    await aredis.sadd(keys.watchlist, "MSFT", "<script>x</script>", "a/b", "bad ticker", "aapl")
    async with served(settings) as (url, _app):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            listed = (await http.get("/api/watchlist")).json()
            assert [row["ticker"] for row in listed] == ["MSFT"]
            for raw in ("<script>x</script>", "a/b", "bad ticker", "aapl"):
                deleted = await http.delete(f"/api/watchlist/{quote(raw, safe='')}")
                assert deleted.status_code == 204, (raw, deleted.text)
            assert (await http.delete("/api/watchlist/nothing here")).status_code == 404
    assert {m.decode() for m in await aredis.smembers(keys.watchlist)} == {"MSFT"}


async def test_a_source_that_never_ticked_is_named_by_readiness_without_a_heartbeat(
    settings, aredis
):
    # What a producer holding the lease writes while its source gives nothing: the
    # status, but no heartbeat (that needs a tick that landed).
    status = {"source": "massive-rest", "state": "unreachable", "detail": None}
    await aredis.set(settings.keys.producer_status, orjson.dumps(status), ex=30)
    async with served(settings) as (url, _app):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            ready = await http.get("/api/ready")
            assert ready.status_code == 503
            assert ready.json()["reason"] == "price source not producing: source unreachable"
            await aredis.delete(settings.keys.producer_status)
            gone = await http.get("/api/ready")
            assert gone.json()["reason"] == "producer heartbeat missing (no live producer)"
