"""Read access against the real `pricefeed gateway` process: every refusal over HTTP,
entitlements on every read path, expiry mid-stream, writes, and no secret in any output."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import orjson
import pytest

from bench.contract_publisher import ContractWriter
from shared.keys import Keys
from tests.gateway.access.conftest import SECRET, claims, hs256, jwt_env, unsigned
from tests.gateway.test_process import wait_serving
from tests.helpers.sse import SSEReader, open_stream
from tests.helpers.support import Service, free_port, running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
STREAM = "/api/stream/prices"
READ_PATHS = [STREAM, "/api/prices", "/api/prices/AAPL", "/api/watchlist"]
STATIC = "static-LEAKCHECK-write-token-42"


@contextlib.asynccontextmanager
async def gateway(service_env, artifacts_dir, namespace, **env: str) -> AsyncIterator[
        tuple[httpx.AsyncClient, Service]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full = {**service_env, "PRICEFEED_PORT": str(port), "PRICEFEED_LOG_LEVEL": "DEBUG",
            **jwt_env(**env)}
    with running(["gateway"], full, artifacts_dir / f"gw-access-{namespace}.log") as gw:
        await wait_serving(url, gw)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield client, gw


@pytest.fixture
async def producer(aredis, namespace) -> ContractWriter:
    fake = ContractWriter(aredis, Keys(namespace))
    await fake.atick({"AAPL": 190.0, "MSFT": 420.0, "TSLA": 250.0})
    await aredis.sadd(Keys(namespace).watchlist, "AAPL", "MSFT", "TSLA")
    return fake


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"pricefeed_token={token}"}


def bad_tokens() -> dict[str, str]:
    """Built when a test runs: the times in them are relative to now."""
    valid = hs256()
    return {
        "alg none": unsigned(),
        "another algorithm": jwt.encode(claims(), SECRET, algorithm="HS384"),
        "bad signature": valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB"),
        "expired": hs256(exp=int(time.time()) - 5),
        "not yet valid": hs256(nbf=int(time.time()) + 300),
        "wrong audience": hs256(aud="another-service"),
        "wrong issuer": hs256(iss="https://elsewhere.test"),
        "no exp": hs256(exp=None),
        "over 8 KB": hs256(padding="p" * 8200),
    }


async def test_every_bad_or_missing_token_gets_401_json_with_a_challenge(
    service_env, artifacts_dir, namespace, producer
):
    async with gateway(service_env, artifacts_dir, namespace) as (client, gw):
        for path in READ_PATHS:
            r = await client.get(path)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == 'Bearer realm="pricefeed"'
            assert "access token is required" in r.json()["detail"]
        bad = bad_tokens()
        for name, token in bad.items():
            for path in READ_PATHS:
                for how in ("header", "query", "cookie"):
                    headers, params = {}, {}
                    if how == "header":
                        headers = bearer(token)
                    elif how == "query":
                        params = {"access_token": token}
                    else:
                        headers = cookie(token)
                    r = await client.get(path, headers=headers, params=params)
                    assert r.status_code == 401, (name, path, how, r.status_code, r.text)
                    assert r.headers["content-type"] == "application/json"
                    assert r.headers["www-authenticate"] == \
                        'Bearer realm="pricefeed", error="invalid_token"', (name, path)
                    assert r.json()["detail"].startswith("the token"), (name, r.text)
        # A valid token without the read scope is 403 insufficient_scope, not 401.
        r = await client.get("/api/prices", headers=bearer(hs256(scope="write")))
        assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"]
        # What stays open: the page, liveness, readiness (503 here: no producer) and metrics.
        for path, code in (("/", 200), ("/api/health", 200), ("/api/ready", 503),
                           ("/metrics", 200)):
            assert (await client.get(path)).status_code == code, path
    output = gw.log_path.read_text()
    assert SECRET not in output
    for token in bad.values():
        assert token[-20:] not in output


async def test_a_ticker_outside_the_token_never_shows_on_any_read_path(
    service_env, artifacts_dir, namespace, producer
):
    token = hs256(tickers=["AAPL", "NVDA"])
    async with gateway(service_env, artifacts_dir, namespace) as (client, _gw):
        r = await client.get("/api/prices", headers=bearer(token))
        assert r.status_code == 200 and set(r.json()) == {"AAPL"}
        r = await client.get("/api/prices/MSFT", params={"access_token": token})
        assert r.status_code == 403 and "MSFT" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/api/prices/aapl", headers=bearer(token))).status_code == 200
        r = await client.get("/api/watchlist", headers=cookie(token))
        assert [row["ticker"] for row in r.json()] == ["AAPL"]
        r = await client.get(STREAM, params={"tickers": "MSFT,TSLA", "access_token": token})
        assert r.status_code == 403 and "none of the requested" in r.json()["detail"]
        params = {"access_token": token, "events": "watchlist"}
        async with open_stream(client, STREAM, params=params) as sse:
            first = await sse.event()
            notice = await sse.event()
            assert set(first.json()) == {"AAPL"}
            assert (notice.event, notice.json()) == ("watchlist", {"tickers": ["AAPL"]})
        for params in ({"access_token": token}, {"access_token": token, "tickers": "AAPL,MSFT"}):
            async with open_stream(client, STREAM, params=params) as sse:
                assert set((await sse.event()).json()) == {"AAPL"}  # the snapshot
                for i in range(5):
                    await producer.atick({"MSFT": 421.0 + i, "TSLA": 251.0 + i})
                final = (await producer.atick({"AAPL": 191.0, "MSFT": 430.0}))["AAPL"].seq
                got = await sse.updates_until(lambda b, seq=final: b.position[1] >= seq)
                assert all(set(b.json()) == {"AAPL"} for b in got), [b.data for b in got]


async def test_a_stream_ends_with_event_expired_at_the_tokens_exp(
    service_env, artifacts_dir, namespace, producer
):
    async with gateway(service_env, artifacts_dir, namespace) as (client, _gw):
        exp = int(time.time()) + 3
        token = hs256(exp=exp)
        async with open_stream(client, STREAM, params={"access_token": token}) as sse:
            await sse.event()
            ticking = asyncio.create_task(tick_forever(producer, 0.2))
            try:
                blocks = await read_until_end(sse, timeout_s=exp - time.time() + 3)
            finally:
                ticking.cancel()
            ended = time.time()
            assert blocks[-1].event == "expired", [b.event for b in blocks]
            assert "new one" in orjson.loads(blocks[-1].data)["detail"]
            assert any(b.event is None and b.data for b in blocks[:-1])  # live until then
            # exp is whole seconds; the timer fires at exp (loop timers are ms-accurate),
            # plus the time to deliver the frame on a busy 2-core machine.
            assert exp - 0.05 <= ended < exp + 1.5, (ended, exp)
        # Reconnecting with the same token is refused: the page then asks for a new one.
        r = await client.get(STREAM, params={"access_token": token})
        assert r.status_code == 401 and "expired" in r.json()["detail"]


async def tick_forever(producer: ContractWriter, interval_s: float) -> None:
    i = 0
    while True:
        i += 1
        await producer.atick({"AAPL": 190.0 + i % 7, "MSFT": 420.0 + i % 5})
        await asyncio.sleep(interval_s)


async def read_until_end(sse: SSEReader, timeout_s: float) -> list:
    blocks = []
    with contextlib.suppress(EOFError):
        async with asyncio.timeout(timeout_s):
            while True:
                blocks.append(await sse.block(timeout_s))
    return blocks


async def test_writes_take_the_static_token_or_a_write_scoped_jwt(
    service_env, artifacts_dir, namespace, producer
):
    async with gateway(service_env, artifacts_dir, namespace,
                       PRICEFEED_API_TOKEN=STATIC) as (client, gw):
        body = {"ticker": "IBM"}
        assert (await client.post("/api/watchlist", json=body)).status_code == 401
        r = await client.post("/api/watchlist", json=body, headers=bearer(hs256()))
        assert r.status_code == 403 and 'no "write" scope' in r.json()["detail"]
        r = await client.post("/api/watchlist", json=body, headers=bearer("wrong"))
        assert r.status_code == 401
        assert (await client.post("/api/watchlist", json=body,
                                  headers=bearer(STATIC))).status_code == 201
        writer = hs256(scope="read write", tickers=["IBM"])
        r = await client.post("/api/watchlist", json={"ticker": "AAPL"}, headers=bearer(writer))
        assert r.status_code == 201 and r.json() == {"ticker": "AAPL", "price": None}
        assert (await client.delete("/api/watchlist/IBM", headers=bearer(writer))).status_code \
            == 204
    output = gw.log_path.read_text()
    assert STATIC not in output and SECRET not in output


async def test_the_token_command_mints_what_the_gateway_accepts(
    service_env, artifacts_dir, namespace, producer
):
    env = {**service_env, **jwt_env()}
    proc = await asyncio.create_subprocess_exec(
        "uv", "run", "--frozen", "pricefeed", "token", "--tickers", "msft", "--ttl", "60",
        "--scope", "read,write", env={**_base_env(), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0 and err == b"", err
    token = out.decode().strip()
    assert SECRET not in out.decode()
    async with gateway(service_env, artifacts_dir, namespace) as (client, _gw):
        r = await client.get("/api/prices", headers=bearer(token))
        assert r.status_code == 200 and set(r.json()) == {"MSFT"}
        r = await client.post("/api/watchlist", json={"ticker": "MSFT"}, headers=bearer(token))
        assert r.status_code == 201


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}



async def test_max_hz_conflates_to_the_rate_and_ends_each_interval_with_the_latest_value(
    service_env, artifacts_dir, namespace, producer
):
    capped = {  # name: (query, token claims, events per second it must get at most)
        "asked 2": ({"max_hz": "2"}, {}, 2.0),
        "claim 1 beats asked 10": ({"max_hz": "10"}, {"max_hz": 1}, 1.0),
        "server ceiling 4": ({}, {}, 4.0),
    }
    async with gateway(service_env, artifacts_dir, namespace, PRICEFEED_MAX_HZ="4") as (
            client, _gw):
        r = await client.get(STREAM, params={"max_hz": "0", "access_token": hs256()})
        assert r.status_code == 422 and "max_hz" in r.json()["detail"]
        async with contextlib.AsyncExitStack() as stack:
            readers = {}
            for name, (query, extra, _) in capped.items():
                params = {**query, "access_token": hs256(**extra)}
                readers[name] = await stack.enter_async_context(
                    open_stream(client, STREAM, params=params))
                await readers[name].event()  # the snapshot
            received = {name: Collector(sse) for name, sse in readers.items()}
            started = time.monotonic()
            last = {}
            while time.monotonic() - started < 3.0:  # 40 ticks a second, both tickers
                last = await producer.atick({"AAPL": 100 + (time.monotonic() % 50),
                                            "MSFT": 300 + (time.monotonic() % 20)})
                await asyncio.sleep(0.025)
            window = time.monotonic() - started
            final_seq = max(u.seq for u in last.values())
            # Each capped client ends its interval with the latest value of each ticker.
            await asyncio.wait_for(asyncio.gather(*(
                c.reached(final_seq) for c in received.values())), timeout=5)
        for name, (_, _, hz) in capped.items():
            events = received[name].events
            during = [t for t, _ in events if t - started <= window]
            # At most one event per interval (+1: the first may come at once).
            assert len(during) <= hz * window + 1, (name, len(during))
            assert len(during) >= hz * window / 2, (name, len(during))  # and not starved
            gaps = [b - a for a, b in itertools.pairwise(during)]
            assert min(gaps) > 0.5 / hz, (name, gaps)
            state = {}
            for _, data in events:
                state.update(data)
            assert {t: u["price"] for t, u in state.items()} == \
                {t: u.price for t, u in last.items()}, name


class Collector:
    """Records (arrival time, data) of every event of one stream, in a task."""

    def __init__(self, sse: SSEReader) -> None:
        self.sse, self.events, self.max_seq = sse, [], 0
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            data = (await self.sse.event(timeout_s=30)).json()
            self.events.append((time.monotonic(), data))
            async with self.changed:
                self.max_seq = max(self.max_seq, *(u["seq"] for u in data.values()))
                self.changed.notify_all()

    async def reached(self, seq: int) -> None:
        try:
            async with self.changed:
                await self.changed.wait_for(lambda: self.max_seq >= seq)
        finally:
            self.task.cancel()
