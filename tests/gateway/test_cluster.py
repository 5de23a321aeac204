"""The gateway on a Redis Cluster (docs/CLUSTER.md "The gateway on a Cluster"): the real app
served in-process against a real 3-primary Cluster, fed by the test's Cluster writer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Iterator

import httpx
import orjson
import pytest

from gateway.cluster.clients import ClusterClients
from gateway.cluster.feed import ClusterPriceFeed
from gateway.cluster.hub import ClusterHub
from gateway.positions import cluster_epoch
from gateway.stats import Stats
from shared.keys import partition_of
from shared.redisio import POOLED, SERVICE, cluster_topology
from shared.settings import Settings
from tests.gateway.access.conftest import hs256, jwt_env
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.cluster_writer import ClusterWriter, Ticking
from tests.helpers.gateway import served
from tests.helpers.poll import wait_until
from tests.helpers.sse import Block, open_stream

pytestmark = pytest.mark.integration

P = 4
# AAPL and ORCL share partition 0; JPM is 1, AMZN 2, MSFT 3 (CRC-32 mod 4).
PRICES = {"AAPL": 190.0, "ORCL": 120.0, "JPM": 150.0, "AMZN": 180.0, "MSFT": 410.0}
STREAM = "/api/stream/prices"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterGroup]:
    group = RedisClusterGroup(primaries=3, replicas=0).start()
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def settings(cluster: RedisClusterGroup, namespace: str) -> Settings:
    return Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": str(P),
                              "PRICEFEED_NAMESPACE": namespace})


@pytest.fixture
def writer(cluster: RedisClusterGroup, settings: Settings) -> Iterator[ClusterWriter]:
    writer = ClusterWriter(cluster, settings.layout, PRICES)
    try:
        yield writer
    finally:
        writer.close()


@pytest.fixture
async def gateway(settings: Settings, writer: ClusterWriter
                  ) -> AsyncIterator[httpx.AsyncClient]:
    writer.tick(PRICES)  # every partition has a price, a log and an epoch
    async with served(settings) as (url, _app):
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            yield client


def vector(block: Block) -> tuple[str, list[int], str]:
    epoch, pos, prev = block.id.split("-")  # type: ignore[union-attr]
    return epoch, [int(v) for v in pos.split(".")], prev


def epochs(writer: ClusterWriter) -> str:
    layout = writer.layout
    raw = [writer.node(layout.partition(i)).get(layout.partition(i).epoch) for i in range(P)]
    return cluster_epoch([r.decode() if r else "0" * 16 for r in raw])


async def test_a_stream_opens_with_every_partitions_snapshot_then_goes_on_live(
        gateway, writer):
    async with open_stream(gateway, STREAM) as stream:
        first = await stream.event()
        epoch, pos, prev = vector(first)
        assert set(first.json()) == set(PRICES) and prev == "0"
        assert epoch == epochs(writer) and len(pos) == P
        # Each component is its partition's log end: partition 0 holds two tickers.
        assert pos[0] == 2 and pos[1] == pos[2] == pos[3] == 1
        writer.tick({"JPM": 151.0})
        live = await stream.event()
        assert live.json()["JPM"]["price"] == 151.0 and set(live.json()) == {"JPM"}
        _, after, prev = vector(live)
        assert prev == ".".join(map(str, pos))  # the README's check: previous == last
        assert after == [pos[0], 2, pos[2], pos[3]]  # only JPM's partition moved


async def test_rest_reads_each_ticker_from_its_partition(gateway, writer):
    everything = (await gateway.get("/api/prices")).json()
    assert {t: u["price"] for t, u in everything.items()} == PRICES
    one = await gateway.get("/api/prices/amzn")
    assert one.status_code == 200 and one.json()["price"] == 180.0
    assert (await gateway.get("/api/prices/NOPE")).status_code == 404


async def test_the_watchlist_lives_in_the_meta_slot_and_control_is_a_shard_channel(
        gateway, writer, cluster, settings):
    meta = settings.layout.meta
    node = writer.node(meta)
    pubsub = node.pubsub()
    pubsub.ssubscribe(meta.control)
    try:
        added = await gateway.post("/api/watchlist", json={"ticker": "aapl"})
        assert added.status_code == 201 and added.json() == {"ticker": "AAPL", "price": 190.0}
        assert node.smembers(meta.watchlist) == {b"AAPL"}
        listed = await gateway.get("/api/watchlist")
        assert listed.json() == [{"ticker": "AAPL", "price": 190.0}]
        assert (await gateway.delete("/api/watchlist/AAPL")).status_code == 204
        messages = [pubsub.get_message(timeout=1) for _ in range(3)]
        controls = [orjson.loads(m["data"]) for m in messages
                    if m is not None and m["type"] == "smessage"]
        assert [c["action"] for c in controls] == ["add", "remove"]
    finally:
        pubsub.close()


async def test_bars_are_read_from_the_tickers_partition_and_streamed_from_every_partition(
        gateway, writer, settings):
    keys = settings.layout.of("MSFT")
    node = writer.node(keys)
    bar = {"t": 1_700_000_000, "o": 1, "h": 2, "l": 0.5, "c": 1.5, "n": 3, "v": None}
    node.zadd(keys.bars("1m", "MSFT"), {orjson.dumps(bar): 1_700_000_000})
    answer = await gateway.get("/api/bars/MSFT", params={"interval": "1m"})
    assert answer.status_code == 200 and answer.json()["bars"][0]["c"] == 1.5
    jpm = settings.layout.of("JPM")
    writer.node(jpm).hset(jpm.forming("1s"), "JPM", orjson.dumps({**bar, "c": 1.2}))
    async with open_stream(gateway, STREAM, params={"bars": "1s"}) as stream:
        await stream.event()  # the price snapshot

        def closed() -> int:  # a close of MSFT's partition, on its shard channel
            return int(node.execute_command(
                "SPUBLISH", keys.bar_channel("1s"), orjson.dumps({"MSFT": {**bar, "c": 1.8}})))

        async def bars_seen(want: set[tuple[str, bool]], seen: set[tuple[str, bool]]) -> None:
            while not want <= seen:
                block = await stream.event(timeout_s=5)
                if block.event == "bar":
                    seen |= {(t, b["partial"]) for t, b in block.json()["bars"].items()}

        await wait_until(closed, what="the close subscribed")
        await bars_seen({("MSFT", False), ("JPM", True)}, set())  # a close, a forming bar


async def test_ready_waits_for_every_partition_and_names_those_with_a_producer(
        gateway, writer):
    answer = await gateway.get("/api/ready")
    assert answer.status_code == 503 and "heartbeat" in answer.json()["reason"]
    writer.heartbeat(partition_of("JPM", P))
    answer = await gateway.get("/api/ready")
    assert answer.status_code == 200, answer.text
    assert answer.json()["producers"] == {"fresh": [1], "missing": [0, 2, 3], "unknown": []}


async def test_resume_sends_the_latest_of_what_changed_in_any_partition(gateway, writer):
    async with open_stream(gateway, STREAM) as stream:
        last = (await stream.event()).id
    writer.tick({"AAPL": 191.0})
    writer.tick({"AAPL": 192.0, "MSFT": 411.0})
    async with open_stream(gateway, STREAM, headers={"Last-Event-ID": last}) as stream:
        missed = await stream.event()
    assert {t: u["price"] for t, u in missed.json().items()} == {"AAPL": 192.0, "MSFT": 411.0}
    assert missed.id.split("-")[2] == last.split("-")[1]  # follows the client's last event


async def test_replay_all_sends_every_missed_tick_of_every_partition_in_order(
        gateway, writer):
    async with open_stream(gateway, STREAM) as stream:
        last = (await stream.event()).id
    for tick in ({"AAPL": 191.0}, {"JPM": 152.0}, {"AAPL": 193.0, "MSFT": 412.0}):
        writer.tick(tick)
        await asyncio.sleep(0.003)  # entries of two partitions in one ms are concurrent
    async with open_stream(gateway, STREAM, params={"replay": "all"},
                           headers={"Last-Event-ID": last}) as stream:
        events = [await stream.event() for _ in range(4)]
    prices = [{t: u["price"] for t, u in e.json().items()} for e in events]
    # The last tick is two units (partitions 0 and 3), written in that order: merged by
    # entry time, then partition.
    assert prices == [{"AAPL": 191.0}, {"JPM": 152.0}, {"AAPL": 193.0}, {"MSFT": 412.0}]
    chain = [last.split("-")[1]] + [e.id.split("-")[1] for e in events]
    assert [e.id.split("-")[2] for e in events] == chain[:-1]  # each follows the one before


async def test_an_id_of_another_dataset_gets_a_reset_and_the_whole_snapshot(gateway, writer):
    stale = f"{'ab' * 8}-{'.'.join(['1'] * P)}-0"
    async with open_stream(gateway, STREAM, headers={"Last-Event-ID": stale}) as stream:
        first = await stream.event()
        assert first.event == "reset"
        snapshot = await stream.event()
    assert set(snapshot.json()) == set(PRICES) and snapshot.id.endswith("-0")


async def test_many_ticks_reach_a_stream_once_each_in_seq_order(gateway, writer):
    async with open_stream(gateway, STREAM) as stream:
        await stream.event()
        for _ in range(20):
            writer.tick()
        seen: dict[str, list[int]] = {}
        last_price = {}
        positions: list[list[int]] = []

        def record(block: Block) -> bool:
            positions.append(vector(block)[1])
            for ticker, update in block.json().items():
                seen.setdefault(ticker, []).append(update["seq"])
                last_price[ticker] = update["price"]
            return last_price == writer.prices

        await stream.updates_until(record, timeout_s=10)
    for seqs in seen.values():
        assert seqs == sorted(set(seqs))  # never twice, never backwards
    for before, after in itertools.pairwise(positions):  # no component ever goes back
        assert all(a >= b for a, b in zip(after, before, strict=True)), (before, after)


async def test_a_partition_whose_slot_moves_is_subscribed_on_its_new_node(cluster, namespace):
    # Eight partitions: JPM's (5) is a slot no other test of this module writes, still
    # empty, so it moves without a migration.
    settings = Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": "8",
                                  "PRICEFEED_NAMESPACE": namespace})
    keys = settings.layout.of("JPM")
    moved = ClusterWriter(cluster, settings.layout, {"JPM": 150.0})
    old = cluster.primary_of(keys.seq).port
    target = next(n.port for n in cluster.nodes if n.port != old)
    async with served(settings) as (url, _app), \
            httpx.AsyncClient(base_url=url, timeout=5) as client, \
            open_stream(client, STREAM) as stream:
        await stream.event()  # the (empty) snapshot
        # The highest config epoch first: otherwise the old owner's gossip may win the
        # slot back before every node was told (seen: 1 run in 2).
        cluster.node_client(target).execute_command("CLUSTER BUMPEPOCH")
        cluster.assign_slot(cluster.client().keyslot(keys.seq), target)
        moved.tick({"JPM": 151.0})
        # Redis unsubscribes the slot's shard channels on the old node; the gateway asks
        # for the map again and subscribes on the new one, before the periodic recheck.
        got = await stream.updates_until(lambda b: "JPM" in b.json(), timeout_s=4)
    assert got[-1].json()["JPM"]["price"] == 151.0
    moved.close()


async def test_a_delayed_entitlement_sees_every_partition_delay_s_late(
        cluster, namespace, writer):
    settings = Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": str(P),
                                  "PRICEFEED_NAMESPACE": namespace, **jwt_env()})
    writer.tick(PRICES)
    await asyncio.sleep(1.3)  # the log must reach back further than the delay
    writer.tick({"AAPL": 191.0, "MSFT": 411.0})
    written = time.monotonic()
    token = hs256(delay_s=1)
    async with served(settings) as (url, _app), \
            httpx.AsyncClient(base_url=url, timeout=5) as client:
        auth = {"Authorization": f"Bearer {token}"}
        delayed = await client.get("/api/prices", headers=auth)
        assert delayed.headers["x-pricefeed-delay"] == "1"
        assert {t: u["price"] for t, u in delayed.json().items()} == PRICES  # not yet 191
        one = await client.get("/api/prices/MSFT", headers=auth)
        assert one.json()["price"] == 410.0
        async with open_stream(client, STREAM, params={"access_token": token}) as stream:
            first = await stream.event()
            assert first.event == "delayed" and first.json()["AAPL"]["price"] == 190.0
            later = await stream.event()
            assert later.event == "delayed" and set(later.json()) == {"AAPL", "MSFT"}
            assert time.monotonic() - written >= 0.9  # released once a second old
        live = await client.get("/api/prices", headers={"Authorization": f"Bearer {hs256()}"})
        assert live.json()["AAPL"]["price"] == 191.0


class LostProbes:
    """A publisher whose probes never arrive (a node that no longer gets the traffic)."""

    async def call(self, keys, use):
        return None


@pytest.mark.parametrize("lost", [False, True])
async def test_a_quiet_node_subscription_is_probed_by_a_publish_that_must_come_back(
        settings, writer, lost):
    stats = Stats()
    hub = ClusterHub(stats, P)
    clients = ClusterClients(cluster_topology(settings, POOLED), settings.layout)
    feed = ClusterPriceFeed(settings.layout, hub, stats, cluster_topology(settings, SERVICE),
                            probe_after_s=0.2, probe_timeout_s=0.3,
                            publisher=LostProbes() if lost else clients)  # type: ignore[arg-type]
    task = asyncio.create_task(feed.run())
    try:
        await wait_until(lambda: feed.connected, what="every partition subscribed")
        if lost:  # the sessions are rebuilt, and subscribed again
            await wait_until(lambda: stats.redis_reconnects >= 1, what="a rebuilt session")
        else:  # quiet for many probe rounds: the probes come back, nothing is rebuilt
            await asyncio.sleep(1.5)
            assert stats.redis_reconnects == 0 and feed.connected
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await clients.aclose()


async def test_a_node_subscription_cut_on_every_tick_degrades_readiness(
        cluster, namespace, caplog):
    settings = Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": str(P),
                                  "PRICEFEED_NAMESPACE": namespace})
    # ~650 tickers of partition 1: one tick message of ~100 KB, over the node's limit.
    many = [t for t in (f"T{i:04d}" for i in range(2600)) if partition_of(t, P) == 1]
    writer = ClusterWriter(cluster, settings.layout, dict.fromkeys(many, 10.0))
    writer.tick()
    node = writer.node(settings.layout.partition(1))
    async with served(settings) as (url, _app), \
            httpx.AsyncClient(base_url=url, timeout=5) as client:
        node.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 5")
        try:
            with Ticking(writer, 0.2):
                async def reason() -> str:
                    answer = await client.get("/api/ready")
                    return str(answer.json().get("reason", ""))

                said = await wait_until(lambda: _keeps_dropping(reason()), 20,
                                        what="ready says a node keeps dropping")
            assert said.startswith("subscription to a Cluster node keeps dropping")
        finally:
            node.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
    warnings = [r.getMessage() for r in caplog.records if "keeps dropping" in r.getMessage()]
    assert len(warnings) == 1  # throttled: one line with the count, not one per loss
    writer.close()


async def _keeps_dropping(reason: Awaitable[str]) -> str:
    text = await reason
    return text if "keeps dropping" in text else ""
