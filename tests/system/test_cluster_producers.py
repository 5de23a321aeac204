"""Producer processes on a real Redis Cluster (3 primaries, 1 replica each; node timeout
1 s): two share the partitions and one survives the other's SIGKILL; one survives the
SIGKILL of a primary serving some partitions; SIGTERM releases every lease at once
(docs/CLUSTER.md "Producers scale out"). Across each run no ticker's seq repeats or goes
backward, on the shard channels (in each node's delivery order) and in the logs: two
writers of one partition reserve disjoint seq blocks, so their ticks would interleave
backward there."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.cluster import RedisCluster

from shared.codec import decode_map
from shared.keys import Keys, Layout
from shared.ticklog import parse_entry_id
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.poll import wait_until
from tests.helpers.support import RedisServer, Service, running
from tests.producer.test_cluster_producer import TICKERS, P

pytestmark = [pytest.mark.integration, pytest.mark.e2e]



def env_of(cluster: RedisClusterGroup, namespace: str) -> dict[str, str]:
    return {"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": str(P),
            "PRICEFEED_NAMESPACE": namespace, "PRICEFEED_TICK_INTERVAL": "0.05",
            "PRICEFEED_TICKERS": ",".join(TICKERS), "PRICEFEED_LOG_LEVEL": "INFO"}


def live_client(cluster: RedisClusterGroup) -> RedisCluster:
    """A Cluster client seeded by a node still running (a test may have killed one)."""
    return RedisCluster(host="127.0.0.1", port=cluster.alive()[0].port, socket_timeout=5)


def serving(cluster: RedisClusterGroup, keys: Keys) -> RedisServer:
    client = live_client(cluster)
    try:
        port = client.get_node_from_key(keys.latest).port
    finally:
        client.close()
    return next(n for n in cluster.nodes if n.port == port)


def holders(client: RedisCluster, layout: Layout) -> dict[int, str | None]:
    """Each partition's lease holder now."""
    out = {}
    for i, keys in enumerate(layout.all()):
        raw = client.get(keys.lease)
        out[i] = raw.decode() if raw else None
    return out


def last_entry(client: RedisCluster, keys: Keys) -> tuple[int, int] | None:
    """(seq, ms) of the partition's newest log entry."""
    entries = client.xrevrange(keys.ticks, count=1)
    return parse_entry_id(entries[0][0]) if entries else None


def owner_of(service: Service, ids: set[str]) -> str:
    return next(i for i in ids if f":{service.proc.pid}:" in i)


def assert_rising_logs(client: RedisCluster, layout: Layout, after: dict[str, int] | None = None
                       ) -> dict[str, int]:
    """Along every partition's log, each ticker's seq strictly rises (and starts above
    ``after``'s, when given); the last seq per ticker."""
    last: dict[str, int] = dict(after or {})
    for keys in layout.all():
        for _, fields in client.xrange(keys.ticks):
            for ticker, update in decode_map(fields[b"map"]).items():
                assert update.seq > last.get(ticker, 0), f"{ticker} seq {update.seq} repeated"
                last[ticker] = update.seq
    return last


@contextlib.asynccontextmanager
async def recording(cluster: RedisClusterGroup, layout: Layout
                    ) -> AsyncIterator[list[tuple[str, int]]]:
    """Every (ticker, seq) published on the partitions' ``prices`` shard channels, in the
    order each node delivered them (one SSUBSCRIBE connection per partition)."""
    got: list[tuple[str, int]] = []

    async def read(keys: Keys, ready: asyncio.Event) -> None:
        client = aioredis.Redis(port=serving(cluster, keys).port, socket_timeout=None)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.ssubscribe(keys.prices)
                ready.set()
                async for message in pubsub.listen():
                    if message["type"] == "smessage":
                        got.extend((t, u.seq) for t, u in decode_map(message["data"]).items())
        finally:
            await client.aclose()

    readies = [asyncio.Event() for _ in range(P)]
    tasks = [asyncio.create_task(read(k, r)) for k, r in zip(layout.all(), readies, strict=True)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
        yield got
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def assert_rising(got: list[tuple[str, int]]) -> None:
    last: dict[str, int] = {}
    for ticker, seq in got:
        assert seq > last.get(ticker, 0), f"{ticker}: seq {seq} after {last.get(ticker)}"
        last[ticker] = seq


async def test_two_producers_split_the_partitions_and_one_takes_over_the_killed_ones(
        cluster, namespace, artifacts_dir: Path):
    layout = Layout(namespace, P)
    client = live_client(cluster)
    env = env_of(cluster, namespace)
    logs = [artifacts_dir / f"producer-{namespace}-{n}.log" for n in ("a", "b")]
    async with recording(cluster, layout) as got:
        with running(["producer"], env, logs[0]) as a, running(["producer"], env, logs[1]) as b:
            started = time.monotonic()
            split = await wait_until(
                lambda: (h := holders(client, layout)) and None not in h.values()
                and sorted(Counter(h.values()).values()) == [3, 3] and h,
                timeout_s=15, what="the partitions split 3/3")
            print(f"split 3/3 {time.monotonic() - started:.1f} s after the start")
            victim, survivor = owner_of(a, set(split.values())), owner_of(b, set(split.values()))
            moved = [i for i, h in split.items() if h == victim]
            killed_ms = time.time() * 1000
            a.signal(signal.SIGKILL)
            a.proc.wait(5)

            def taken() -> bool:
                now = holders(client, layout)
                return all(now[i] == survivor and (e := last_entry(client, layout.partition(i)))
                           is not None and e[1] > killed_ms for i in moved)

            await wait_until(taken, timeout_s=10, what="the survivor writing every partition")
            takeover_s = time.time() - killed_ms / 1000
            print(f"takeover after SIGKILL: {takeover_s:.2f} s")
            assert takeover_s < 6  # the leases expire after 3 s, a round comes within 1 s
            assert b.alive()
            assert holders(client, layout) == dict.fromkeys(range(P), survivor)
            sent = len(got)
            await wait_until(lambda: len(got) > sent + 20, what="more ticks")
        assert "Traceback" not in b.output()
    assert_rising(got)
    assert_rising_logs(client, layout)
    assert {t for t, _ in got} == set(TICKERS)


def test_sigterm_releases_every_lease_at_once_and_exits_cleanly(
        cluster, namespace, artifacts_dir: Path):
    layout = Layout(namespace, P)
    client = live_client(cluster)
    log = artifacts_dir / f"producer-{namespace}-sigterm.log"
    with running(["producer"], env_of(cluster, namespace), log) as service:
        asyncio.run(wait_until(lambda: None not in holders(client, layout).values()
                               and all(last_entry(client, k) for k in layout.all()),
                               timeout_s=15, what="every partition written"))
        stopped = time.monotonic()
        service.signal(signal.SIGTERM)
        assert service.proc.wait(5) == 0
        elapsed = time.monotonic() - stopped
    assert elapsed < 2.0
    assert set(holders(client, layout).values()) == {None}  # deleted, not left to expire
    assert client.zcard(layout.meta.producers) == 0
    output = service.output()
    assert "Traceback" not in output and "released partitions [0, 1, 2, 3, 4, 5]" in output


async def test_a_killed_primary_is_followed_to_its_promoted_replica(
        cluster, namespace, artifacts_dir: Path):
    # Last in this module: it leaves the Cluster with one node fewer.
    layout = Layout(namespace, P)
    client = live_client(cluster)
    log = artifacts_dir / f"producer-{namespace}-failover.log"
    with running(["producer"], env_of(cluster, namespace), log) as service:
        await wait_until(lambda: all(last_entry(client, k) for k in layout.all()),
                         timeout_s=15, what="every partition written")
        victim = serving(cluster, layout.partition(0))
        hit = [i for i, k in enumerate(layout.all()) if serving(cluster, k) is victim]
        spared = [i for i in range(P) if i not in hit]
        before = assert_rising_logs(client, layout)
        killed_ms = time.time() * 1000
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait()
        client.close()

        def landed(indexes: list[int]) -> bool:
            try:
                fresh = live_client(cluster)
            except redis.RedisError:
                return False
            try:
                return all((e := last_entry(fresh, layout.partition(i))) is not None
                           and e[1] > killed_ms + 1000 for i in indexes)
            except redis.RedisError:
                return False
            finally:
                fresh.close()

        await wait_until(lambda: landed(spared), timeout_s=5, what="the spared partitions")
        await wait_until(lambda: landed(hit), timeout_s=20, what="ticks on the new primary")
        first_tick_s = time.time() - killed_ms / 1000
        print(f"first tick on the promoted primary {first_tick_s:.2f} s after the kill")
        assert service.alive()
        assert all(serving(cluster, layout.partition(i)) is not victim for i in hit)
        cluster.wait_settled()
        client = live_client(cluster)
        after = assert_rising_logs(client, layout)
        assert all(after[t] > before[t] for t in TICKERS)
    assert "Traceback" not in service.output()
