"""``python -m pricefeed gateway`` with ``REDIS_URL=redis+cluster://…`` (docs/CLUSTER.md "The
gateway on a Cluster"): a real gateway process on a real Cluster with a password, fed by
the test's Cluster writer; it serves REST and a stream, refuses another P, and stops
cleanly on SIGTERM."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from shared.keys import Layout
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.cluster_writer import ClusterWriter
from tests.helpers.poll import wait_for
from tests.helpers.support import Service, free_port
from tests.helpers.system import LOGS, serving, split_frames

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

P = 4
PRICES = {"AAPL": 190.0, "JPM": 150.0, "AMZN": 180.0, "MSFT": 410.0}
VECTOR = rb"[0-9]+(\.[0-9]+){%d}" % (P - 1)
CLUSTER_ID = re.compile(rb"[0-9a-f]{16}-%b-(0|%b)" % (VECTOR, VECTOR))


def price_event(frame: bytes) -> dict[str, dict[str, object]]:
    """The data of a price frame, after checking its Cluster id."""
    fields = dict(line.split(b": ", 1) for line in frame.split(b"\r\n") if b": " in line)
    assert CLUSTER_ID.fullmatch(fields[b"id"]), fields[b"id"]
    data: dict[str, dict[str, object]] = orjson.loads(fields[b"data"])
    return data


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterGroup]:
    group = RedisClusterGroup(primaries=3, replicas=0, password="sys-cluster-pw").start()
    try:
        yield group
    finally:
        group.close()


def test_a_gateway_process_serves_a_cluster_and_stops_cleanly(cluster):
    LOGS.mkdir(parents=True, exist_ok=True)
    namespace = f"cl-{uuid.uuid4().hex[:8]}"
    writer = ClusterWriter(cluster, Layout(namespace, P), PRICES)
    writer.tick(PRICES)
    port = free_port()
    env = {"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": str(P),
           "PRICEFEED_NAMESPACE": namespace, "PRICEFEED_PORT": str(port)}
    gateway = Service(["gateway"], env, LOGS / f"{namespace}-gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:  # the heartbeats last 3 s; the process takes longer to start
            for index in range(P):
                writer.heartbeat(index)
            return serving(url)

        wait_for(ready, 30, 0.1, "the gateway ready")
        prices = httpx.get(f"{url}/api/prices").json()
        assert {t: u["price"] for t, u in prices.items()} == PRICES
        with httpx.stream("GET", f"{url}/api/stream/prices", timeout=5) as response:
            chunks = response.iter_bytes()
            frames, buffer = [], b""
            while not frames:
                got, buffer = split_frames(buffer + next(chunks))
                frames += [f for f in got if b"data:" in f]
            assert set(price_event(frames[0])) == set(PRICES)
            writer.tick({"AMZN": 181.0})
            while len(frames) < 2:
                got, buffer = split_frames(buffer + next(chunks))
                frames += [f for f in got if b"data:" in f]
            assert price_event(frames[1])["AMZN"]["price"] == 181.0
        assert gateway.stop() == 0
        assert "sys-cluster-pw" not in gateway.output()
    finally:
        gateway.stop()
        writer.close()


def test_a_gateway_configured_with_another_partition_count_refuses_to_start(cluster):
    namespace = f"cl-{uuid.uuid4().hex[:8]}"
    node = ClusterWriter(cluster, Layout(namespace, P)).node(Layout(namespace, P).meta)
    node.hset(Layout(namespace, P).meta.config, "partitions", "8")
    env = {"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": str(P),
           "PRICEFEED_NAMESPACE": namespace, "PRICEFEED_PORT": str(free_port())}
    gateway = Service(["gateway"], env, LOGS / f"{namespace}-gateway.log")
    try:
        assert gateway.proc.wait(30) == 2
        output = gateway.output()
        assert "PRICEFEED_PARTITIONS=4" in output and "says 8" in output
        assert "Traceback" not in output  # one line, as any configuration error
    finally:
        gateway.stop()
