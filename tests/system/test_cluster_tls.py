"""A Redis Cluster over TLS only (docs/CLUSTER.md, `rediss+cluster://`): three primaries with
no plain port, the cluster bus over TLS too, certificates made here with openssl; a real
producer and gateway reach it with `PRICEFEED_REDIS_CA_FILE` and serve prices."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from redis.cluster import RedisCluster

from pricefeed.localredis import find_server
from shared.keys import Layout
from tests.helpers.poll import wait_for
from tests.helpers.support import free_port
from tests.helpers.system import TICKERS, system
from tests.helpers.tls import make_certs

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _tls(certs: Path) -> list[str]:
    return ["--tls", "--cacert", str(certs / "ca.crt")]


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[tuple[list[int], Path]]:
    """Three TLS-only Cluster primaries (``--port 0``, ``tls-cluster yes``): their ports."""
    certs = make_certs(tmp_path)
    binary, cli = find_server(), shutil.which("redis-cli")
    assert binary is not None and cli is not None
    ports, procs = [free_port() for _ in range(3)], []
    try:
        for port in ports:
            node_dir = tmp_path / str(port)
            node_dir.mkdir()
            procs.append(subprocess.Popen(
                [binary.path, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                 "--tls-cert-file", str(certs / "server.crt"),
                 "--tls-key-file", str(certs / "server.key"),
                 "--tls-ca-cert-file", str(certs / "ca.crt"), "--tls-auth-clients", "no",
                 "--tls-cluster", "yes", "--tls-replication", "yes",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "n.conf"),
                 "--cluster-port", str(free_port()), "--dir", str(node_dir), "--save", "",
                 "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: all(subprocess.run(
            [cli, *_tls(certs), "-p", str(p), "ping"], capture_output=True).stdout == b"PONG\n"
            for p in ports), 10, 0.1, "three TLS nodes answering")
        subprocess.run([cli, *_tls(certs), "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        wait_for(lambda: b"cluster_state:ok" in subprocess.run(
            [cli, *_tls(certs), "-p", str(ports[0]), "cluster", "info"],
            capture_output=True).stdout, 20, 0.1, "the TLS Cluster ok")
        yield ports, certs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def test_producer_and_gateway_on_a_tls_only_cluster(tls_cluster):
    ports, certs = tls_cluster
    # Nothing answers in plain text: the only way in is TLS.
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(port=ports[0], socket_timeout=2).ping()
    url = "rediss+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    env = {"PRICEFEED_REDIS_CA_FILE": str(certs / "ca.crt"), "PRICEFEED_PARTITIONS": "3"}
    with system(url, **env) as sys:
        prices = httpx.get(sys.urls[0] + "/api/prices", timeout=5).json()
        assert set(prices) == set(TICKERS)  # {TICKER: PriceUpdate}, read over TLS
        layout = Layout(sys.keys.namespace, 3)
        cluster = RedisCluster(host="127.0.0.1", port=ports[0], ssl=True,
                               ssl_ca_certs=str(certs / "ca.crt"), socket_timeout=5)
        try:
            raw = cluster.hget(layout.of("AAPL").latest, "AAPL")
            assert raw is not None and orjson.loads(raw)["ticker"] == "AAPL"
        finally:
            cluster.close()
        for service in [*sys.producers, *sys.gateways]:
            assert service.alive(), service.output()[-2000:]
