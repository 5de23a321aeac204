"""The hub's positions on a Cluster (docs/CLUSTER.md "The gateway on a Cluster"), in memory:
a vector of per-partition positions, partition resyncs, and the Cluster's event ids."""

from __future__ import annotations

import asyncio

from gateway.cluster.feed import ClusterPriceFeed
from gateway.cluster.hub import ClusterHub
from gateway.positions import Vector, cluster_epoch, join
from gateway.stats import Stats
from gateway.stream.framing import event_id
from gateway.stream.request import parse_event_id
from gateway.updates import EncodedUpdate
from shared.keys import Layout

# With two partitions AAPL and AMZN are partition 0, MSFT and JPM partition 1.


def update(seq: int) -> EncodedUpdate:
    return EncodedUpdate(seq, b'{"seq":%d}' % seq)


def opened_hub() -> ClusterHub:
    hub = ClusterHub(Stats(), 2)
    hub.resync_partition(0, {"AAPL": update(1)}, "e" * 16, 1)
    hub.resync_partition(1, {"MSFT": update(2)}, "f" * 16, 2)
    return hub


def test_a_tick_moves_its_partitions_component_only_and_ids_show_the_vector():
    hub = opened_hub()
    client = hub.register(None)
    client.cover(Vector((1, 2)))
    hub.publish_partition(1, {"JPM": update(3)}, 3)
    batch = client.take()
    assert batch is not None and batch.pos == Vector((1, 3)) and set(batch.items) == {"JPM"}
    assert event_id(hub.epoch, batch.pos, Vector((1, 2))) == f"{hub.epoch}-1.3-1.2"
    assert hub.epoch == cluster_epoch(["e" * 16, "f" * 16])
    hub.publish_partition(1, {"JPM": update(3)}, 3)  # already covered: dropped
    assert client.take() is None


def test_a_resync_of_one_partition_under_its_epoch_sends_only_what_changed_there():
    hub = opened_hub()
    client = hub.register(None)
    client.cover(Vector((1, 2)))
    client.last_pos = Vector((1, 2))
    hub.resync_partition(0, {"AAPL": update(5), "AMZN": update(4)}, "e" * 16, 5)
    batch = client.take()
    assert batch is not None and not client.reset
    assert {t: u.seq for t, u in batch.items.items()} == {"AAPL": 5, "AMZN": 4}
    assert batch.pos == Vector((5, 2))  # MSFT, partition 1, is not sent again


def test_a_partition_with_another_epoch_or_a_shorter_log_resets_every_stream():
    for epoch, top in (("d" * 16, 9), ("e" * 16, 0)):
        hub = opened_hub()
        client = hub.register(None)
        client.cover(Vector((1, 2)))
        client.last_pos = Vector((1, 2))
        hub.resync_partition(0, {"AAPL": update(top or 1)}, epoch, top)
        batch = client.take()
        assert client.reset and client.last_pos == 0
        assert batch is not None and set(batch.items) == {"AAPL", "MSFT"}  # the whole


def test_a_position_never_goes_back_when_joined():
    assert join(Vector((3, 1)), Vector((1, 4))) == Vector((3, 4))
    assert join(0, Vector((1, 2))) == Vector((1, 2)) and join(5, 7) == 7


def test_cluster_ids_parse_with_exactly_one_component_per_partition():
    parsed = parse_event_id(f"{'a' * 16}-3.4-3.1", 2)
    assert parsed is not None and parsed.pos == Vector((3, 4))
    assert parse_event_id(f"{'a' * 16}-3.4-0", 2) is not None
    for bad in (f"{'a' * 16}-3-0", f"{'a' * 16}-3.4.5-0", f"{'a' * 16}-3.x-0",
                f"{'a' * 16}-3.4-1", f"{'a' * 16}-" + "1." * 200 + "1"):
        assert parse_event_id(bad, 2) is None, bad
    assert parse_event_id(f"{'a' * 16}-3-1") is not None  # one server: unchanged


def test_partition_ticks_received_together_reach_each_client_as_one_batch():
    hub = opened_hub()
    both, msft_only, resynced = (hub.register(None), hub.register(frozenset({"MSFT"})),
                                 hub.register(None))
    for client in (both, msft_only):
        client.cover(Vector((1, 2)))
    resynced.cover(Vector((7, 2)))  # its floor covers partition 0 up to 7 already
    hub.publish_partitions([(0, {"AAPL": update(6)}, 6), (1, {"MSFT": update(8)}, 8),
                            (0, {"AMZN": update(7)}, 7)])
    batch = both.take()
    assert batch is not None and batch.pos == Vector((7, 8))
    assert {t: u.seq for t, u in batch.items.items()} == {"AAPL": 6, "MSFT": 8, "AMZN": 7}
    assert both.take() is None  # one batch, not one per partition
    only = msft_only.take()
    assert only is not None and set(only.items) == {"MSFT"}
    newer = resynced.take()
    assert newer is not None and set(newer.items) == {"MSFT"}
    hub.publish_partitions([(0, {"AAPL": update(6)}, 6)])  # covered: nothing
    assert both.take() is None


def held_feed(hub: ClusterHub) -> tuple[ClusterPriceFeed, asyncio.Event]:
    """The Cluster feed's hand-over to ``hub`` (no sessions: its nodes' reads are the
    test's), and an event set each time it hands ticks to the hub."""
    handed = asyncio.Event()
    publish = hub.publish_partitions

    def counted(ticks):
        handed.set()
        publish(ticks)

    hub.publish_partitions = counted  # type: ignore[method-assign]
    return ClusterPriceFeed(Layout("t", 2), hub, hub.stats, topology=None), handed


async def test_partition_ticks_read_through_different_nodes_go_out_as_one_event():
    hub = opened_hub()
    client = hub.register(None)
    client.cover(Vector((1, 2)))
    feed, handed = held_feed(hub)
    feed.publish([(0, {"AAPL": update(3)}, 3)])  # one node's read
    feed.publish([(1, {"MSFT": update(4)}, 4)])  # another node's, a moment later
    assert client.take() is None  # held for the other nodes' parts of the tick
    await handed.wait()
    batch = client.take()
    assert batch is not None and batch.pos == Vector((3, 4))
    assert {t: u.seq for t, u in batch.items.items()} == {"AAPL": 3, "MSFT": 4}


async def test_held_ticks_reach_the_hub_before_a_resync_of_their_partition():
    """A node's session flushes before it resyncs a partition: a tick it read before a
    failover must not reach clients after the reset that the failover brings."""
    hub = opened_hub()
    client = hub.register(None)
    client.cover(Vector((1, 2)))
    client.last_pos = Vector((1, 2))
    feed, _ = held_feed(hub)
    feed.publish([(0, {"AAPL": update(5)}, 5)])  # read just before the node failed
    feed.flush()
    before = client.take()
    assert before is not None and before.pos == Vector((5, 2))
    client.last_pos = before.pos
    # The promoted replica had not received seq 5: the partition's log ends before what
    # was sent, so every client gets a reset and the snapshot.
    hub.resync_partition(0, {"AAPL": update(3)}, "e" * 16, 3)
    snapshot = client.take()
    assert client.reset and snapshot is not None
    assert {t: u.seq for t, u in snapshot.items.items()} == {"AAPL": 3, "MSFT": 2}
    assert feed._flush_at is None and not feed._held  # nothing left to come after it
