"""The 1 min backfill on a Redis Cluster (docs/BARS.md "Backfill", docs/CLUSTER.md): a
REST producer backfills each partition it takes into that partition's bars."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from producer.cluster_runner import ClusterRunner
from shared.bars import decode_bar
from shared.keys import partition_of
from shared.redisio import SERVICE, cluster_topology
from shared.settings import Secret, Settings
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.massive import API_KEY, agg, snapshot_entry
from tests.helpers.poll import wait_until

pytestmark = [pytest.mark.massive, pytest.mark.integration]

TICKERS = ("AAPL", "MSFT")  # partitions 0 and 3 of 4


@pytest.fixture
def cluster() -> Iterator[RedisClusterGroup]:
    group = RedisClusterGroup(replicas=0).start()
    try:
        yield group
    finally:
        group.close()


async def test_a_rest_producer_backfills_each_partition_it_takes(massive_http, cluster,
                                                                   namespace) -> None:
    assert sorted(partition_of(t, 4) for t in TICKERS) == [0, 3]
    minute = int(time.time() // 60) * 60
    for i, ticker in enumerate(TICKERS):
        massive_http.aggs[ticker] = [agg((minute - 60 * k) * 1000, 100.0 + i + k)
                                     for k in range(5)]
        massive_http.serve(snapshot_entry(ticker, 190.0 + i, time.time_ns()))
    settings = Settings(redis_url=cluster.url, namespace=namespace, tickers=TICKERS,
                        partitions=4, massive_api_key=Secret(API_KEY),
                        massive_base_url=massive_http.url, poll_interval_s=1.0,
                        massive_calls_per_minute=100)
    topology = cluster_topology(settings, SERVICE)
    runner = ClusterRunner(settings, topology, owner_id="rest")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    sync = cluster.client()
    try:
        def bars(ticker: str) -> list[int]:
            keys = settings.layout.of(ticker)
            return [decode_bar(raw).t for raw in sync.zrange(keys.bars("1m", ticker), 0, -1)]

        await wait_until(lambda: all(len(bars(t)) >= 4 for t in TICKERS), timeout_s=15,
                         what="both partitions' backfilled bars")
        assert all(bars(t)[-1] == minute - 60 for t in TICKERS)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await topology.aclose()
