"""The producer on a real Redis Cluster (3 primaries, 1 replica each), in-process: each
partition written and published on the node serving it, the P check, and the watchlist
followed through the meta slot's shard channel (docs/CLUSTER.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

import producer.watchlist as watchlist_module
from producer.cluster_runner import ClusterRunner
from producer.lease import Lease
from producer.partition_term import PartitionTerm
from producer.runner import bar_options
from producer.sources.base import PriceBatch
from shared.codec import decode_map, decode_update, encode_control, encode_update
from shared.keys import Keys, partition_of
from shared.models import PriceUpdate
from shared.redisio import SERVICE, cluster_topology
from shared.redisio.latest import decode_latest
from shared.settings import Settings
from shared.ticklog import parse_entry_id
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.poll import wait_until
from tests.helpers.support import running

pytestmark = pytest.mark.integration

P = 6
# Two tickers in each of the 6 partitions (CRC-32 mod 6), so every partition ticks.
TICKERS = ("QAG", "QAN", "QAC", "QAH", "QAU", "QBB", "QAK", "QAP", "QAD", "QAE", "QAA", "QAB")



def cluster_settings(cluster: RedisClusterGroup, namespace: str, **env: str) -> Settings:
    return Settings.from_env({
        "REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": str(P),
        "PRICEFEED_NAMESPACE": namespace, "PRICEFEED_TICK_INTERVAL": "0.05",
        "PRICEFEED_TICKERS": ",".join(TICKERS), **env,
    })


@contextlib.asynccontextmanager
async def producing(settings: Settings) -> AsyncIterator[ClusterRunner]:
    """A `ClusterRunner` running in a task; stopped (leases released) at the end."""
    topology = cluster_topology(settings, SERVICE)
    runner = ClusterRunner(settings, topology)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await topology.aclose()


def node(cluster: RedisClusterGroup, keys: Keys) -> aioredis.Redis:
    """A client of the primary serving ``keys``' slot."""
    return aioredis.Redis(port=cluster.primary_of(keys.latest).port, socket_timeout=5)


async def check_partition(cluster: RedisClusterGroup, keys: Keys, tickers: list[str]) -> None:
    """A tick map and a per-ticker update read with SSUBSCRIBE on the serving node are
    already in the partition's cache, and the map is the log entry of its last seq."""
    client = node(cluster, keys)
    pubsub = client.pubsub()
    try:
        await pubsub.ssubscribe(keys.prices, keys.price(tickers[0]))
        seen: set[str] = set()
        async with asyncio.timeout(10):
            while seen != {"map", "one"}:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is None or message["type"] != "smessage":
                    continue
                cache = decode_latest((await client.hgetall(keys.latest)).items())
                if message["channel"] == keys.prices.encode():
                    tick = decode_map(message["data"])
                    assert tick and set(tick) <= set(tickers)
                    top = max(u.seq for u in tick.values())
                    entries = await client.xrange(keys.ticks, min=str(top), max=str(top))
                    assert [fields[b"map"] for _, fields in entries] == [message["data"]]
                    assert all(cache[t].seq >= u.seq for t, u in tick.items())
                    seen.add("map")
                else:
                    update = decode_update(message["data"])
                    assert update.ticker == tickers[0]
                    assert cache[update.ticker].seq >= update.seq
                    seen.add("one")
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_each_partition_is_written_and_published_on_the_node_serving_it(
        cluster, namespace):
    settings = cluster_settings(cluster, namespace)
    async with producing(settings) as runner:
        by_partition = {i: [t for t in TICKERS if partition_of(t, P) == i] for i in range(P)}
        await asyncio.gather(*(check_partition(cluster, settings.layout.partition(i), tickers)
                               for i, tickers in by_partition.items()))
        assert sorted(runner.terms) == list(range(P))
        sync = cluster.client()
        assert int(sync.hget(settings.layout.meta.config, "partitions")) == P
        for i, tickers in by_partition.items():
            keys = settings.layout.partition(i)
            assert {f.decode() for f in sync.hkeys(keys.latest)} == set(tickers)
            assert sync.get(keys.lease).decode() == runner.owner_id
    for keys in settings.layout.all():  # a clean stop deletes every lease at once
        assert sync.get(keys.lease) is None
    assert sync.zscore(settings.layout.meta.producers, runner.owner_id) is None


def test_another_number_of_partitions_is_refused_with_one_line(
        cluster, namespace, artifacts_dir: Path):
    meta = Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_NAMESPACE": namespace,
                              "PRICEFEED_PARTITIONS": "6"}).layout.meta
    cluster.client().hset(meta.config, "partitions", 6)
    env = {"REDIS_URL": cluster.url, "PRICEFEED_NAMESPACE": namespace,
           "PRICEFEED_PARTITIONS": "4"}
    log = artifacts_dir / f"producer-{namespace}-partitions.log"
    with running(["producer"], env, log) as service:
        assert service.proc.wait(15) == 2
        lines = [line for line in service.output().splitlines() if "partitions=" in line]
    assert len(lines) == 1 and "partitions=6" in lines[0]
    assert "PRICEFEED_PARTITIONS=4" in lines[0] and "Traceback" not in service.output()


async def test_the_watchlist_is_followed_through_the_meta_control_shard_channel(
        cluster, namespace, monkeypatch):
    # Only the control channel can bring the change: the periodic re-read is far off.
    monkeypatch.setattr(watchlist_module, "RESYNC_INTERVAL_S", 600.0)
    settings = cluster_settings(cluster, namespace)
    meta, new = settings.layout.meta, "QZZ"
    keys = settings.layout.of(new)
    sync = cluster.client()
    async with producing(settings) as runner:
        await wait_until(lambda: len(runner.terms) == P and runner.watchlist is not None
                         and sync.hlen(keys.latest) > 0, what="every partition producing")
        sync.sadd(meta.watchlist, new)
        assert sync.spublish(meta.control, encode_control("add", new)) >= 1
        await wait_until(lambda: sync.hget(keys.latest, new), what=f"{new} in its cache")
        assert runner.source is not None and new in runner.source.get_tickers()
        sync.srem(meta.watchlist, new)
        sync.spublish(meta.control, encode_control("remove", new))
        await wait_until(lambda: new not in runner.source.get_tickers(), what="removed")
        def last() -> tuple[int, int]:
            return parse_entry_id(sync.xrevrange(keys.ticks, count=1)[0][0])

        top = last()
        await wait_until(lambda: last() > top,
                         what="a later tick of its partition")  # none may write it back
        assert sync.hget(keys.latest, new) is None


async def test_a_taken_partition_continues_from_its_cached_prices_and_seqs(cluster, namespace):
    settings = cluster_settings(cluster, namespace)
    keys = settings.layout.of("QAA")
    cached = PriceUpdate("QAA", 1234.56, 1230.0, time.time() - 5, 50_000, 1200.0)
    sync = cluster.client()
    # What an earlier producer left: the cache, the seq top and the watchlist.
    sync.sadd(settings.layout.meta.watchlist, *TICKERS)
    sync.set(settings.layout.meta.watchlist_marker, "1")
    sync.hset(keys.latest, "QAA", encode_update(cached))
    sync.set(keys.seq, 50_000)
    client = node(cluster, keys)
    pubsub = client.pubsub()
    await pubsub.ssubscribe(keys.price("QAA"))
    try:
        async with producing(settings):
            message = None
            while message is None or message["type"] != "smessage":
                message = await pubsub.get_message(timeout=10)
            first = decode_update(message["data"])
    finally:
        await pubsub.aclose()
        await client.aclose()
    assert first.previous_price == cached.price and first.seq > cached.seq
    assert abs(first.price / cached.price - 1) < 0.05  # one step of the walk, not a reseed


async def test_a_lost_lease_ends_only_that_partition_which_is_taken_back_once_free(
        cluster, namespace):
    settings = cluster_settings(cluster, namespace)
    sync = cluster.client()
    lost, other = settings.layout.partition(2), settings.layout.partition(3)

    def top(keys: Keys) -> tuple[int, int]:
        entries = sync.xrevrange(keys.ticks, count=1)
        return parse_entry_id(entries[0][0]) if entries else (0, 0)

    async with producing(settings) as runner:
        await wait_until(lambda: len(runner.terms) == P and top(lost)[0] and top(other)[0],
                         what="every partition producing")
        # Another writer's lease (as if ours had expired): our next tick of it is fenced.
        sync.set(lost.lease, "intruder", px=3000)
        await wait_until(lambda: 2 not in runner.terms, what="partition 2's term ended")
        fenced, other_before = top(lost), top(other)
        await wait_until(lambda: top(other) > other_before, what="partition 3 going on")
        assert top(lost) == fenced and sync.get(lost.lease) == b"intruder"
        await wait_until(lambda: 2 in runner.terms and top(lost) > fenced, timeout_s=8,
                         what="partition 2 taken back once the lease expired")
        assert sync.get(lost.lease).decode() == runner.owner_id
        assert top(lost)[0] > fenced[0]  # its seqs go on above the last written


async def test_a_moved_control_slot_ends_the_watchlist_subscription_for_a_retry(
        cluster, monkeypatch):
    # The periodic re-read would fail too (MOVED), later: only the sunsubscribe may end it.
    monkeypatch.setattr(watchlist_module, "RESYNC_INTERVAL_S", 600.0)
    # A tag of its own: an empty slot, which the Cluster can move without a migration.
    keys = Keys("moved", "{control-move}")
    port = cluster.primary_of(keys.control).port
    client = aioredis.Redis(port=port, socket_timeout=5)

    async def nothing(ticker: str) -> None:
        return None

    watchlist = watchlist_module.Watchlist(client, keys, (), 10, nothing, nothing)
    task = asyncio.create_task(watchlist.follow())
    try:
        await wait_until(lambda: cluster.node_client(port).pubsub_shardnumsub(keys.control)
                         == [(keys.control.encode(), 1)], what="the SSUBSCRIBE")
        target = next(n for n in cluster.alive() if n.port != port
                      and cluster.node_client(n.port).info("replication")["role"] == "master")
        cluster.assign_slot(cluster.client().keyslot(keys.control), target.port)
        with pytest.raises(RedisConnectionError, match="ended by Redis"):
            await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


async def test_a_partition_given_up_leaves_its_forming_bars_and_deletes_its_lease(
        cluster, namespace):
    settings = cluster_settings(cluster, namespace, PRICEFEED_BARS_FORMING_INTERVAL="10")
    keys = settings.layout.partition(0)
    tickers = [t for t in TICKERS if partition_of(t, P) == 0]
    client = node(cluster, keys)
    term = PartitionTerm(0, keys, client, "me", settings, bar_options(settings), dict)
    try:
        assert await Lease(client, keys, "me").acquire()
        await term.begin(tickers, None)
        term.start()
        for step in range(5):
            await term.publisher.publish(
                PriceBatch(tickers, np.array([10.0 + step, 20.0 + step]), time.time()))
        await term.give_up()
        last = parse_entry_id((await client.xrevrange(keys.ticks, count=1))[0][0])[0]
        # The forming bars were written with the last tick (not 10 s of them later).
        assert int(await client.get(keys.forming_seq)) == last
        assert await client.get(keys.lease) is None
    finally:
        await client.aclose()
