"""The contract tests' two topologies behind one face: one redis-server, and a Redis
Cluster of three primaries (one replica each) with P = 3 and ONE PARTITION PER PRIMARY
(docs/CLUSTER.md), so a test of a reader covers partitions on different nodes.

A `World` gives a test the reference writer of its topology (`ContractWriter` or
`ClusterContractWriter`), the reader under test (`shared.subscriber.subscribe` with one
client on one server, as existing callers use it; a `Feed` from nothing but the URL on a
Cluster), and raw access for what a test does behind the reader's back.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Iterator, Mapping
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from bench.contract_publisher import ClusterContractWriter, ContractWriter
from shared.batches import Batch
from shared.keys import Keys, Layout, partition_tag
from shared.models import PriceUpdate
from shared.redisio import SERVICE, cluster_topology
from shared.settings import Settings
from shared.subscriber import Feed, Handler, consume, snapshot, subscribe
from tests.helpers.cluster import RedisClusterGroup

PARTITIONS = 3


def one_partition_per_primary(group: RedisClusterGroup) -> RedisClusterGroup:
    """Put partition i's slot on the i-th primary (the slots hold no keys yet)."""
    for index, node in enumerate(group.nodes[:PARTITIONS]):
        group.assign_slot(key_slot(partition_tag(index).encode()), node.port)
    return group


class ServerWorld:
    """One redis-server: every name in one scope, classic PUBLISH."""

    name = "server"

    def __init__(self, url: str, namespace: str) -> None:
        self.url, self.namespace = url, namespace
        self.layout = Layout(namespace)
        self.keys = Keys(namespace)
        self.client = aioredis.from_url(url)
        self.sync = redis.Redis.from_url(url)

    async def writer(self, prices: Mapping[str, float] | None = None) -> ContractWriter:
        return ContractWriter(self.client, self.keys, prices)

    def subscribe(self, tickers: Collection[str] | None = None, **kwargs: Any
                  ) -> AsyncGenerator[Batch, None]:
        return subscribe(self.client, self.keys, tickers, **kwargs)

    async def snapshot(self, tickers: Collection[str] | None = None) -> dict[str, PriceUpdate]:
        return await snapshot(self.client, self.keys, tickers)

    async def consume(self, group: str, consumer: str, handler: Handler, **kwargs: Any
                      ) -> None:
        await consume(self.client, self.keys, group, consumer, handler, **kwargs)

    def node(self, keys: Keys) -> redis.Redis:
        """A sync client of the server holding ``keys``' names."""
        return self.sync

    def publish(self, keys: Keys, channel: str, payload: bytes) -> None:
        self.node(keys).publish(channel, payload)

    def nodes(self) -> Iterator[redis.Redis]:
        yield self.sync

    def wipe(self) -> None:
        """Delete every name of the namespace (a Redis that lost its data)."""
        for node in self.nodes():
            for key in list(node.scan_iter(match=f"{self.namespace}:*")):
                node.delete(key)

    def kill_subscriptions(self) -> int:
        return sum(int(n.client_kill_filter(_type="pubsub")) for n in self.nodes())

    async def aclose(self) -> None:
        self.sync.close()
        await self.client.aclose()


class ClusterWorld(ServerWorld):
    """The P = 3 Cluster: each partition on its own primary, SPUBLISH, and the reader a
    `Feed` that knows only the URL and the namespace (it reads P from the meta config)."""

    name = "cluster"

    def __init__(self, group: RedisClusterGroup, namespace: str) -> None:
        self.group, self.url, self.namespace = group, group.url, namespace
        self.layout = Layout(namespace, PARTITIONS)
        self.settings = Settings.from_env({"REDIS_URL": group.url,
                                           "PRICEFEED_NAMESPACE": namespace,
                                           "PRICEFEED_PARTITIONS": str(PARTITIONS)})
        self.topology = cluster_topology(self.settings, SERVICE)
        self.feed = Feed.from_url(group.url, namespace)  # P = 16 until it reads the config
        self.sync_clients: dict[int, redis.Redis] = {}

    async def start(self) -> ClusterWorld:
        writer = ClusterContractWriter(self.topology, self.layout)
        await writer.aconfig()
        return self

    async def writer(self, prices: Mapping[str, float] | None = None) -> ContractWriter:
        return ClusterContractWriter(self.topology, self.layout, prices)

    def subscribe(self, tickers: Collection[str] | None = None, **kwargs: Any
                  ) -> AsyncGenerator[Batch, None]:
        return self.feed.subscribe(tickers, **kwargs)

    async def snapshot(self, tickers: Collection[str] | None = None) -> dict[str, PriceUpdate]:
        return await self.feed.snapshot(tickers)

    async def consume(self, group: str, consumer: str, handler: Handler, **kwargs: Any
                      ) -> None:
        await self.feed.consume(group, consumer, handler, **kwargs)

    def node(self, keys: Keys) -> redis.Redis:
        port = self.group.primary_of(keys.latest).port
        return self._client(port)

    def _client(self, port: int) -> redis.Redis:
        if port not in self.sync_clients:
            self.sync_clients[port] = self.group.node_client(port)
        return self.sync_clients[port]

    def publish(self, keys: Keys, channel: str, payload: bytes) -> None:
        self.node(keys).spublish(channel, payload)

    def nodes(self) -> Iterator[redis.Redis]:
        """The primaries (a replica refuses writes, and holds no subscription of ours)."""
        for node in self.group.alive():
            client = self._client(node.port)
            if client.info("replication")["role"] == "master":
                yield client

    async def aclose(self) -> None:
        for client in self.sync_clients.values():
            client.close()
        await self.feed.aclose()
        await self.topology.aclose()


World = ServerWorld  # the face both share
