"""Redis Sentinel over TLS only (docs/REDIS.md "Sentinel", `rediss+sentinel://`): a primary and
a replica with no plain port (replication over TLS), three sentinels with no plain port,
certificates made here with openssl; a real producer and gateway find the primary through
the sentinels over TLS, serve prices, and follow an asked failover."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from pricefeed.localredis import find_server
from tests.helpers.poll import wait_for
from tests.helpers.support import free_port
from tests.helpers.system import TICKERS, system
from tests.helpers.tls import make_certs

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MASTER = "pricefeed"


def _tls_args(certs: Path) -> list[str]:
    return ["--tls-cert-file", str(certs / "server.crt"), "--tls-key-file",
            str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
            "--tls-auth-clients", "no", "--tls-replication", "yes"]


def _client(port: int, certs: Path) -> redis.Redis:
    return redis.Redis(port=port, ssl=True, ssl_ca_certs=str(certs / "ca.crt"),
                       socket_timeout=2)


def _role(port: int, certs: Path) -> str:
    try:
        return str(_client(port, certs).info("replication")["role"])
    except (redis.RedisError, OSError):
        return "unreachable"


@pytest.fixture
def tls_sentinels(tmp_path: Path) -> Iterator[tuple[list[int], list[int], Path]]:
    """Server ports (the first the primary), sentinel ports, the certificates' directory."""
    certs = make_certs(tmp_path)
    binary = find_server()
    assert binary is not None
    servers, sentinels = [free_port(), free_port()], [free_port() for _ in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, port in enumerate(servers):
            replica = ["--replicaof", "127.0.0.1", str(servers[0])] if i else []
            procs.append(subprocess.Popen(
                [binary.path, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                 *_tls_args(certs), "--save", "", "--appendonly", "no", "--dir",
                 str(tmp_path), "--repl-diskless-sync-delay", "0", *replica],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: _client(servers[1], certs).info("replication").get(
            "master_link_status") == "up", 20, 0.1, "the replica synced over TLS")
        tls_conf = "".join(f"{k} {v}\n" for k, v in zip(
            ("tls-cert-file", "tls-key-file", "tls-ca-cert-file"),
            (certs / "server.crt", certs / "server.key", certs / "ca.crt"), strict=True))
        for port in sentinels:
            conf = tmp_path / f"sentinel-{port}.conf"
            conf.write_text(
                f"port 0\ntls-port {port}\nbind 127.0.0.1\ndir {tmp_path}\n{tls_conf}"
                "tls-auth-clients no\ntls-replication yes\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {servers[0]} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 500\n"
                f"sentinel failover-timeout {MASTER} 2000\n")
            procs.append(subprocess.Popen([binary.path, str(conf), "--sentinel"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def settled() -> bool:
            try:
                states = [_client(p, certs).sentinel_master(MASTER) for p in sentinels]
            except (redis.RedisError, OSError):
                return False
            return all(s["num-slaves"] >= 1 and s["num-other-sentinels"] >= 2 for s in states)

        wait_for(settled, 30, 0.1, "three TLS sentinels that know the replica and each other")
        yield servers, sentinels, certs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def test_producer_and_gateway_through_tls_sentinels_follow_a_failover(tls_sentinels):
    servers, sentinels, certs = tls_sentinels
    with pytest.raises(redis.exceptions.ConnectionError):  # no plain text anywhere
        redis.Redis(port=sentinels[0], socket_timeout=2).ping()
    hosts = ",".join(f"127.0.0.1:{p}" for p in sentinels)
    url = f"rediss+sentinel://{hosts}/{MASTER}/0"
    with system(url, PRICEFEED_REDIS_CA_FILE=str(certs / "ca.crt")) as sys:
        prices = httpx.get(sys.urls[0] + "/api/prices", timeout=5).json()
        assert set(prices) == set(TICKERS)
        _client(sentinels[0], certs).sentinel_failover(MASTER)
        wait_for(lambda: _role(servers[1], certs) == "master", 15, 0.05, "the replica promoted")
        promoted = time.monotonic()

        def written_on_new_primary() -> bool:
            last = _client(servers[1], certs).xrevrange(sys.keys.ticks, count=1)
            return bool(last) and int(last[0][0].split(b"-")[0]) > before

        before = int(_client(servers[1], certs).xrevrange(sys.keys.ticks, count=1)[0][0]
                     .split(b"-")[0])
        wait_for(written_on_new_primary, 10, 0.05, "a tick written on the new primary")
        assert time.monotonic() - promoted < 10
        wait_for(lambda: httpx.get(sys.urls[0] + "/api/ready", timeout=5).status_code == 200,
                 15, 0.1, "the gateway ready again")
        for service in [*sys.producers, *sys.gateways]:
            assert service.alive(), service.output()[-2000:]
