"""The real `pricefeed gateway` process: fan-out, shutdown, startup errors."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import httpx
import pytest

from bench.contract_publisher import ContractWriter
from shared.keys import Keys
from shared.version import VERSION
from tests.helpers.poll import wait_until
from tests.helpers.sse import open_stream
from tests.helpers.support import free_port, running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
STREAM = "/api/stream/prices"


def gateway_env(service_env: dict[str, str], port: int, **extra: str) -> dict[str, str]:
    return {**service_env, "PRICEFEED_PORT": str(port), **extra}


async def wait_serving(url: str, service) -> None:
    async def up() -> bool:
        assert service.alive(), service.output()
        try:
            async with httpx.AsyncClient(base_url=url) as client:
                return (await client.get("/api/health")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_until(up, timeout_s=15, what="gateway process serving")


async def test_three_clients_receive_the_same_sequence(
    service_env, aredis, namespace, artifacts_dir
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    producer = ContractWriter(aredis, Keys(namespace))
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    log = artifacts_dir / f"gw-three-{namespace}.log"
    with running(["gateway"], gateway_env(service_env, port), log) as gw:
        await wait_serving(url, gw)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with (open_stream(client, STREAM) as a, open_stream(client, STREAM) as b,
                        open_stream(client, STREAM) as c):
                for sse in (a, b, c):
                    await sse.event()  # the snapshot
                last = None
                for i in range(20):
                    last = await producer.atick({"AAPL": 190.0 + i, "MSFT": 420.0 - i})
                final_seq = max(u.seq for u in last.values())
                seqs = []
                for sse in (a, b, c):
                    got = await sse.updates_until(lambda blk: blk.position[1] >= final_seq)
                    seqs.append([(blk.id, blk.data) for blk in got])
                assert seqs[0] == seqs[1] == seqs[2]
                assert got[-1].position[1] == final_seq


async def test_sigterm_with_open_streams_exits_within_2s(
    service_env, aredis, namespace, artifacts_dir
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    await ContractWriter(aredis, Keys(namespace)).atick({"AAPL": 190.0})
    log = artifacts_dir / f"gw-term-{namespace}.log"
    with running(["gateway"], gateway_env(service_env, port), log) as gw:
        await wait_serving(url, gw)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with open_stream(client, STREAM) as a, open_stream(client, STREAM) as b:
                await a.event()
                await b.event()
                started = time.monotonic()
                gw.signal(signal.SIGTERM)
                await wait_until(lambda: not gw.alive(), timeout_s=3, what="gateway exit")
                assert time.monotonic() - started < 2.0
                with pytest.raises((EOFError, httpx.RemoteProtocolError, httpx.ReadError)):
                    await a.block(timeout_s=1)
        assert gw.proc.returncode == 0, gw.output()


async def test_port_in_use_is_one_clear_line_and_nonzero_exit(
    service_env, namespace, artifacts_dir
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = gateway_env(service_env, port)
        with running(["gateway"], env, artifacts_dir / f"gw-port-{namespace}.log") as gw:
            await asyncio.to_thread(gw.proc.wait, 15)
            assert gw.proc.returncode != 0
            errors = [line for line in gw.output().splitlines() if "ERROR" in line]
            assert len(errors) == 1 and f":{port}" in errors[0], gw.output()


async def test_the_start_line_names_the_version_redis_and_namespace(
    service_env, redis_url, namespace, artifacts_dir
):
    port = free_port()
    log = artifacts_dir / f"gw-start-{namespace}.log"
    with running(["gateway"], gateway_env(service_env, port), log) as gw:
        await wait_serving(f"http://127.0.0.1:{port}", gw)
        output = gw.output()
    line = next(ln for ln in output.splitlines() if "listening on" in ln)
    assert f"(pricefeed {VERSION})" in line
    assert f"Redis {redis_url}, namespace {namespace!r}" in line
    assert "PRICEFEED_API_TOKEN" not in output  # bound to 127.0.0.1: no warning
