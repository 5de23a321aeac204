"""What only a Cluster reader does (docs/CLUSTER.md "Reading"): one subscription
connection per primary, a slot that moves under a live subscription, and a primary
SIGKILLed while the reference writer ticks. One Cluster for the module (P = 3, one
partition per primary at the start); the tests run in order, each on its own namespace,
and the last one kills a primary."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from bench.contract_publisher import ClusterContractWriter
from shared.backoff import Backoff
from shared.batches import Batch
from shared.keys import Layout, partition_tag
from shared.redisio import SERVICE, cluster_topology, shards
from shared.settings import Settings
from shared.subscriber import Feed
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.poll import wait_until
from tests.helpers.topologies import PARTITIONS, one_partition_per_primary

pytestmark = pytest.mark.integration

PRICES = {"AAPL": 190.0, "MSFT": 420.0, "GOOG": 170.0}  # partitions 0, 1 and 2 of 3



class Setup:
    """A namespace's reference writer and a Feed knowing only the URL."""

    def __init__(self, group: RedisClusterGroup, namespace: str) -> None:
        self.group = group
        self.layout = Layout(namespace, PARTITIONS)
        settings = Settings.from_env({"REDIS_URL": group.url, "PRICEFEED_NAMESPACE": namespace,
                                      "PRICEFEED_PARTITIONS": str(PARTITIONS)})
        self.topology = cluster_topology(settings, SERVICE)
        self.writer = ClusterContractWriter(self.topology, self.layout, PRICES)
        self.feed = Feed.from_url(group.url, namespace)

    async def aclose(self) -> None:
        await self.feed.aclose()
        await self.topology.aclose()


@contextlib.asynccontextmanager
async def following(setup: Setup, **kwargs) -> AsyncIterator[asyncio.Queue]:
    """The Feed's subscription in a task: (arrival time, batch) and ("state", up) on a queue;
    an exception of the subscription fails the test."""
    queue: asyncio.Queue = asyncio.Queue()

    async def run() -> None:
        batches = setup.feed.subscribe(on_state=lambda up: queue.put_nowait(("state", up)),
                                       backoff=Backoff(initial_s=0.05, cap_s=0.5), **kwargs)
        async with contextlib.aclosing(batches) as it:
            async for batch in it:
                queue.put_nowait((time.monotonic(), batch))

    task = asyncio.create_task(run())
    try:
        yield queue
    finally:
        assert not task.done(), task.exception() if task.done() else None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_batch(queue: asyncio.Queue, timeout_s: float = 10.0) -> tuple[float, Batch]:
    while True:
        item = await asyncio.wait_for(queue.get(), timeout_s)
        if isinstance(item[1], Batch):
            return item


@pytest.fixture
async def setup(cluster, namespace):
    made = Setup(cluster, namespace)
    await made.writer.aconfig()
    try:
        yield made
    finally:
        await made.aclose()


async def test_a_slot_moved_under_a_live_subscription_is_followed(cluster, setup):
    """Runs first: partition 2's slot is still empty, so it can move without a migration.
    The server ends the subscription of a slot it gives away (``sunsubscribe``): the
    reader asks the Cluster again and resubscribes on the new primary."""
    one_partition_per_primary(cluster)
    async with following(setup) as queue:
        _, first = await next_batch(queue)
        assert first.snapshot and set(first.updates) == set()
        slot = key_slot(partition_tag(2).encode())
        cluster.assign_slot(slot, cluster.nodes[0].port)  # from nodes[2] to nodes[0]
        deadline = time.monotonic() + 10
        while True:  # until the reader is on the new primary and hears GOOG's tick
            written = await setup.writer.atick({"GOOG": 171.0})
            with contextlib.suppress(TimeoutError):
                _, batch = await next_batch(queue, 0.3)
                if batch.updates.get("GOOG") == written["GOOG"]:
                    break
            assert time.monotonic() < deadline, "GOOG's ticks never came after the move"


async def test_one_connection_per_primary_carries_its_partitions(cluster, setup):
    """After the move above, nodes[0] serves partitions 0 and 2: one connection holds both
    shard channels (one SSUBSCRIBE each); nodes[1] holds partition 1's alone."""
    await setup.writer.atick()
    async with following(setup) as queue:
        assert (await next_batch(queue))[1].snapshot
        subscriptions = {}
        for node in cluster.nodes[:3]:
            clients = cluster.node_client(node.port).client_list(_type="pubsub")
            subscriptions[node.port] = sorted(int(c["ssub"]) for c in clients)
        assert subscriptions == {cluster.nodes[0].port: [2], cluster.nodes[1].port: [1],
                                 cluster.nodes[2].port: []}


async def test_a_subscription_sent_on_a_stale_slot_map_is_moved_and_followed(
        cluster, namespace, caplog):
    """The reader's first slot map is stale (a slot moved after the Cluster was asked, and
    the next answer missed it too): its SSUBSCRIBE gets ``-MOVED``; it asks again and
    subscribes on the node serving the slot. P = 8 here: partition 5's slot is empty."""
    layout = Layout(namespace, 8)
    settings = Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_NAMESPACE": namespace,
                                  "PRICEFEED_PARTITIONS": "8"})
    topology = cluster_topology(settings, SERVICE)
    writer = ClusterContractWriter(topology, layout, {"JPM": 300.0})  # partition 5 of 8
    await writer.aconfig()
    async with Feed.from_url(cluster.url, namespace) as feed:
        assert (await feed.layout()).partitions == 8  # the map is read here
        slot = key_slot(partition_tag(5).encode())
        old = feed.topology.address_of(layout.partition(5))
        target = next(n for n in cluster.nodes[:3] if n.port != old[1])
        cluster.assign_slot(slot, target.port)
        real_refresh, skipped = feed.topology.refresh, []

        async def refresh_missing_the_move_once(force: bool = False) -> None:
            if not skipped:
                skipped.append(force)
                return
            await real_refresh(force)

        feed.topology.refresh = refresh_missing_the_move_once
        batches = feed.subscribe(["JPM"])
        async with contextlib.aclosing(batches):
            first = await asyncio.wait_for(anext(batches), 10)
            assert first.snapshot and not first.updates
            written = await writer.atick()
            tick = await asyncio.wait_for(anext(batches), 10)
            assert dict(tick.updates) == written
    await topology.aclose()
    assert skipped and any("MovedError" in r.getMessage() for r in caplog.records)


async def test_a_node_that_stops_answering_is_left_and_its_partitions_come_back(
        cluster, setup, monkeypatch):
    """A node whose clients are paused (``CLIENT PAUSE``: the connection stays open and
    silent, as with a hung node or a lost network) does not answer the PING sent to its
    quiet subscription: the reader says it lost it, and is live again once the node
    answers. The quiet and PING times are cut from 5 s and 3 s to keep the test short."""
    monkeypatch.setattr(shards, "POLL_S", 0.1)
    monkeypatch.setattr(shards, "QUIET_S", 0.3)
    monkeypatch.setattr(shards, "PING_TIMEOUT_S", 0.3)
    await setup.writer.atick()
    async with following(setup) as queue:
        assert (await next_batch(queue))[1].snapshot  # ("state", True) came before it
        node = cluster.node_client(cluster.primary_of(setup.layout.of("MSFT").latest).port)
        node.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        assert await asyncio.wait_for(queue.get(), 5) == ("state", False)
        assert await asyncio.wait_for(queue.get(), 10) == ("state", True)
        written = await setup.writer.atick({"MSFT": 401.0})
        _, batch = await next_batch(queue)
        while "MSFT" not in batch.updates:
            _, batch = await next_batch(queue)
        assert batch.updates["MSFT"] == written["MSFT"]


async def test_a_killed_primary_is_followed_to_its_replica_without_a_repeated_seq(
        cluster, setup):
    """SIGKILL the primary serving MSFT's partition while the reference writer ticks: the
    subscription goes on without an exception, MSFT's ticks come from the promoted replica
    within seconds, and no ticker's seq is ever repeated or goes back."""
    await setup.writer.atick()
    got: list[tuple[float, Batch]] = []  # every batch, the first snapshot included
    async with following(setup) as queue:
        got.append(await next_batch(queue))
        assert got[0][1].snapshot
        ticking = asyncio.create_task(_tick_forever(setup.writer))
        try:
            await _until(queue, lambda b: "MSFT" in b.updates, 5, got)
            victim = cluster.primary_of(setup.layout.of("MSFT").latest)
            victim.proc.kill()  # SIGKILL: no goodbye to its clients
            killed_at = time.monotonic()
            arrived = await _until(queue, lambda b: "MSFT" in b.updates, 15, got, killed_at)
            assert arrived - killed_at < 8, f"MSFT came back {arrived - killed_at:.1f} s later"
            await _until(queue, lambda b: not b.snapshot and "MSFT" in b.updates, 5, got)
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
    _assert_seqs_rise(got)


async def _tick_forever(writer: ClusterContractWriter) -> None:
    while True:
        await writer.atick()
        await asyncio.sleep(0.02)


async def _until(queue: asyncio.Queue, wanted, timeout_s: float, into: list,
                 after: float = 0.0) -> float:
    """Batches (appended to ``into``) until one arrived after ``after`` is ``wanted``; its
    arrival time."""
    deadline = time.monotonic() + timeout_s
    while True:
        arrived, batch = await next_batch(queue, max(0.01, deadline - time.monotonic()))
        into.append((arrived, batch))
        if arrived > after and wanted(batch):
            return arrived


def _assert_seqs_rise(got: list[tuple[float, Batch]]) -> None:
    last: dict[str, int] = {}
    for _, batch in got:
        for ticker, update in batch.updates.items():
            if batch.reset and batch.covers(ticker):
                last.pop(ticker, None)
            assert update.seq > last.get(ticker, 0), (ticker, update.seq, last.get(ticker))
            last[ticker] = update.seq


async def test_a_durable_consumer_follows_a_killed_primary_and_loses_no_logged_tick(
        cluster, setup):
    """Runs after the test above (nodes[1] is gone): SIGKILL the primary serving AAPL's
    partition under a live `Feed.consume`; every entry the logs hold afterwards (the
    promoted replica's) is handled, and nothing stays pending."""
    for _ in range(3):
        await setup.writer.atick()
    handled: set[tuple[str, str]] = set()

    async def handler(entry) -> None:
        handled.add((setup.layout.of(next(iter(entry.updates))).ticks, entry.entry_id))

    consuming = asyncio.create_task(setup.feed.consume("g", "c", handler, start="0",
                                                       block_ms=100, claim_idle_ms=500))
    ticking = asyncio.create_task(_tick_forever(setup.writer))
    try:
        aapl = setup.layout.of("AAPL")
        await wait_until(_alive(consuming, lambda: any(t == aapl.ticks for t, _ in handled)),
                         5, "AAPL's partition consumed")
        cluster.primary_of(aapl.latest).proc.kill()
        before = set(handled)
        # Ticks of AAPL's partition written on the promoted replica, handled.
        await wait_until(_alive(consuming, lambda: sum(
            t == aapl.ticks for t, _ in handled - before) >= 5), 20,
            "AAPL's ticks from the promoted replica")
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
        logged = set()
        for keys in setup.layout.all():
            node = setup.topology.client_for(keys)
            logged |= {(keys.ticks, i.decode()) for i, _ in await node.xrange(keys.ticks)}
        await wait_until(_alive(consuming, lambda: logged <= handled), 10, "every logged tick")
        for keys in setup.layout.all():
            pending = await setup.topology.client_for(keys).xpending(keys.ticks, "g")
            assert pending["pending"] == 0
    finally:
        for task in (ticking, consuming):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _alive(task: asyncio.Task, condition):
    """``condition``, failing at once with the task's error if it ended."""
    def check() -> bool:
        if task.done():
            raise AssertionError(f"consume ended: {task.exception()!r}")
        return bool(condition())
    return check
