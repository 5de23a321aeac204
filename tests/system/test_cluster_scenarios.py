"""The whole system on a Redis Cluster (docs/CLUSTER.md, docs/RELIABILITY.md scenario 27):
two producers sharing P = 6 partitions, a gateway, an SSE client and a `shared.subscriber`
consumer, through a slot migrated with its keys under load, then a primary SIGKILLed.
Nothing exits; no client stalls for more than a few seconds; no ticker's seq repeats or
goes backward on the stream or in the consumer, and no partition hands a seq out twice.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

import pytest

from shared.keys import Layout, partition_of
from shared.subscriber import Batch
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.poll import wait_until
from tests.helpers.streams import Recorder, consuming, recording, seqs_rise_between_resets
from tests.helpers.system import System, system
from tests.producer.test_cluster_producer import TICKERS, P

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

STALL_LIMIT_S = 5.0  # "no client stalls for more than a few seconds"


def _consumer_rises(batches: list[tuple[float, Batch]]) -> int:
    """The same for the consumer's batches: a reset drops what its partitions held."""
    held: dict[str, int] = {}
    checked = 0
    for _, batch in batches:
        if batch.reset:
            held = {t: s for t, s in held.items() if not batch.covers(t)}
        for ticker, update in batch.updates.items():
            assert update.seq > held.get(ticker, 0), ("consumer", ticker, update.seq, held)
            held[ticker] = update.seq
            checked += 1
    return checked


def _longest_gap(recorder: Recorder, tickers: set[str], since: float, until: float) -> float:
    """The longest time in [since, until] with no update of any of ``tickers``."""
    times = [t for t, data in recorder.data(since) if t <= until and tickers & data.keys()]
    edges = [since, *times, until]
    return max(b - a for a, b in itertools.pairwise(edges))


def _alive(sys: System) -> None:
    for service in [*sys.producers, *sys.gateways]:
        assert service.alive(), service.output()[-2000:]


async def _partition_on(cluster: RedisClusterGroup, layout: Layout, index: int) -> int:
    return await asyncio.to_thread(lambda: cluster.primary_of(layout.partition(index).seq).port)


async def test_the_system_rides_a_slot_migration_and_a_killed_primary(
        cluster: RedisClusterGroup):
    env = {"PRICEFEED_PARTITIONS": str(P), "PRICEFEED_TICKERS": ",".join(TICKERS)}
    with system(cluster.url, producers=2, gateways=1, **env) as sys:
        layout = Layout(sys.keys.namespace, P)
        moved = {t for t in TICKERS if partition_of(t, P) == 0}
        recorder = Recorder(sys.urls[0])
        async with (recording(recorder),
                    consuming(cluster.url, sys.keys.namespace) as consumer):
            await wait_until(lambda: len(recorder.data()) >= 10 and len(consumer) >= 3, 20,
                             "events on the stream and batches in the consumer")

            # 1. Partition 0's slot, with its keys, to another primary, under load.
            source = await _partition_on(cluster, layout, 0)
            target = next(n.port for n in cluster.alive()
                          if n.port != source and cluster.is_primary(n.port))
            slot = cluster.client().keyslot(layout.partition(0).seq)
            begun = time.monotonic()
            keys_moved = await asyncio.to_thread(cluster.migrate_slot, slot, target)
            assert keys_moved >= 3  # its cache, log, seq, lease … went with it
            await wait_until(lambda: [t for t, d in recorder.data(time.monotonic() - 0.5)
                                      if moved & d.keys()], 10,
                             "the moved partition's updates on the stream again")
            settled = time.monotonic() + 2.0
            await wait_until(lambda: time.monotonic() >= settled, 5, "two seconds more")
            assert _longest_gap(recorder, moved, begun, time.monotonic()) < STALL_LIMIT_S
            assert await _partition_on(cluster, layout, 0) == target
            _alive(sys)

            # 2. SIGKILL the primary serving partition 1; its replica takes over.
            victim_port = await _partition_on(cluster, layout, 1)
            victim = next(n for n in cluster.nodes if n.port == victim_port)
            lost = {t for t in TICKERS if partition_of(t, P) == 1}
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(5)
            killed = time.monotonic()
            await wait_until(lambda: [t for t, d in recorder.data(killed) if lost & d.keys()],
                             20, "the killed primary's partition on the stream again")
            back = next(t for t, d in recorder.data(killed) if lost & d.keys())
            await wait_until(lambda: any(t > back and any(batch.covers(x) for x in lost)
                                         for t, batch in consumer), 10,
                             "the consumer's batches of it again")
            _alive(sys)

        assert not recorder.ended
        assert seqs_rise_between_resets(recorder, P) > 50
        assert _consumer_rises(consumer) > 10
    # Figures for docs/RELIABILITY.md scenario 27 (printed with -s).
    print(f"\nslot migration: {keys_moved} keys, longest gap of the moved partition "
          f"{_longest_gap(recorder, moved, begun, killed):.2f} s; primary SIGKILL: the "
          f"partition back on the stream {back - killed:.2f} s after the kill")
