"""A Cluster primary killed under an open stream (docs/CLUSTER.md "The gateway on a
Cluster"): its replica is promoted, the gateway resubscribes that partition on it, and the
stream goes on with no seq repeated or going back, ticker by ticker."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import pytest

from shared.keys import partition_of
from shared.settings import Settings
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.cluster_writer import ClusterWriter, Ticking
from tests.helpers.gateway import served
from tests.helpers.poll import wait_until
from tests.helpers.sse import Block, open_stream

pytestmark = pytest.mark.integration

P = 4
PRICES = {"AAPL": 190.0, "ORCL": 120.0, "JPM": 150.0, "AMZN": 180.0, "MSFT": 410.0}


@pytest.fixture
def cluster() -> Iterator[RedisClusterGroup]:
    group = RedisClusterGroup(primaries=3, replicas=1).start()
    try:
        yield group
    finally:
        group.close()


async def test_a_killed_primarys_partitions_continue_on_its_replica_without_a_repeat(
        cluster: RedisClusterGroup, namespace: str):
    settings = Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": str(P),
                                  "PRICEFEED_NAMESPACE": namespace})
    writer = ClusterWriter(cluster, settings.layout, PRICES, wait_replicas=True)
    writer.tick(PRICES)
    # A partition whose primary is not the first node (the writer's way into the Cluster).
    victim_ticker = next(t for t in PRICES if cluster.primary_of(
        settings.layout.of(t).seq).port != cluster.nodes[0].port)
    victim = cluster.primary_of(settings.layout.of(victim_ticker).seq)
    seqs: dict[str, list[int]] = {}
    ids: list[str] = []
    async with served(settings) as (url, app):
        # While the killed primary's slots have no primary the whole Cluster answers
        # CLUSTERDOWN and the stream is quiet (~2 s here, more with the suite beside it):
        # a read may wait as long as the recovery this test allows (20 s, below).
        async with httpx.AsyncClient(base_url=url, timeout=20) as client, \
                open_stream(client, "/api/stream/prices") as stream:

            def record(block: Block) -> bool:
                assert block.event is None, f"unexpected event: {block.event}"
                ids.append(block.id or "")
                for ticker, update in block.json().items():
                    seqs.setdefault(ticker, []).append(update["seq"])
                return False

            record(await stream.event())
            with Ticking(writer, 0.05):
                await stream.updates_until(lambda b: record(b) or len(ids) > 5)
                at_kill = max(seqs[victim_ticker])
                victim.proc.kill()  # type: ignore[union-attr]  # SIGKILL
                killed = time.monotonic()

                async def not_ready() -> dict[str, object]:
                    answer = await client.get("/api/ready")
                    return answer.json() if answer.status_code == 503 else {}

                # Readiness names the partitions waiting for their new primary, and the
                # ones whose heartbeat cannot be read.
                body = await wait_until(not_ready, 5, what="ready fails", interval_s=0.02)
                victim_index = partition_of(victim_ticker, P)
                reason = str(body["reason"])
                assert reason.startswith("partitions not subscribed yet: "), body
                waiting = [int(i) for i in reason.rpartition(" ")[2].split(",")]
                assert victim_index in waiting, body  # and any other of the victim's
                assert body["producers"]["unknown"] == waiting, body  # type: ignore[index]
                # A stream opened now, one node unreadable, starts from the hub's state.
                async with open_stream(client, "/api/stream/prices") as late:
                    opening = await late.event()
                assert set(opening.json()) == set(PRICES) and opening.id.endswith("-0")
                await stream.updates_until(
                    lambda b: record(b) or max(seqs[victim_ticker]) > at_kill + 10, 30)
                recovered_s = time.monotonic() - killed
            feed = app.state.gateway.price_feed
            await wait_until(lambda: feed.connected, what="every partition subscribed")
            # An id from before the kill resumes on the replica: the same partition epochs.
            before = ids[2]
            async with open_stream(client, "/api/stream/prices",
                                   headers={"Last-Event-ID": before}) as resumed:
                missed = await resumed.event()
            assert missed.event is None, "a reset: the failover changed the epochs"
            assert missed.id.split("-")[2] == before.split("-")[1]  # type: ignore[union-attr]
            assert missed.json()[victim_ticker]["seq"] > at_kill
    writer.close()
    for ticker, got in seqs.items():
        assert got == sorted(set(got)), f"{ticker}: a seq repeated or went back"
    for before, after in itertools.pairwise(ids):
        assert after.split("-")[2] == before.split("-")[1]  # each event follows the last
    assert recovered_s < 20
