"""The Cluster contract written the plainest way (docs/CLUSTER.md "One atomic unit per
partition per tick"): the twin of `bench.contract_publisher.ContractWriter` for tests.

Per tick, for each partition it touches, on the primary serving that partition's slot:
``INCRBY NS:{pI}:seq``, then one MULTI/EXEC of ``XADD NS:{pI}:ticks <last seq>-<ms>``
(field ``map``), ``SET NS:{pI}:epoch NX``, ``HSET NS:{pI}:latest``, ``SPUBLISH
NS:{pI}:price:T`` per update and ``SPUBLISH NS:{pI}:prices`` with the partition's tick map.
No lease, no bars: a test of a reader on it checks the contract, not the producer.

With ``wait_replicas``, each unit is followed by ``WAIT 1``: a test that kills a primary
then knows its replica holds every tick the gateway may have sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import redis
from redis.exceptions import ClusterDownError, MovedError, ReadOnlyError, RedisClusterException

from shared.codec import encode_map, encode_update
from shared.keys import Keys, Layout
from shared.models import PriceUpdate
from shared.ticklog import new_epoch
from tests.helpers.cluster import RedisClusterGroup

STALE = (MovedError, ReadOnlyError, ClusterDownError, RedisClusterException, redis.ConnectionError,
         redis.TimeoutError, OSError)


class ClusterWriter:
    """Writes ticks of ``prices`` into the Cluster ``group`` under ``layout``."""

    def __init__(self, group: RedisClusterGroup, layout: Layout,
                 prices: Mapping[str, float] | None = None, wait_replicas: bool = False) -> None:
        self.group = group
        self.layout = layout
        self.prices = dict(prices or {})
        self.wait_replicas = wait_replicas
        self._nodes: dict[str, redis.Redis] = {}  # partition base -> its primary's client

    def tick(self, prices: Mapping[str, float] | None = None) -> dict[str, PriceUpdate]:
        """One tick (every ticker up 0.1 % unless ``prices`` says): the updates written."""
        planned = dict(prices) if prices is not None else {
            t: p * 1.001 for t, p in self.prices.items()}
        by_partition: dict[Keys, dict[str, float]] = {}
        for ticker, price in planned.items():
            by_partition.setdefault(self.layout.of(ticker), {})[ticker] = price
        out: dict[str, PriceUpdate] = {}
        for keys, part in by_partition.items():
            out.update(self.write(keys, part))
        return out

    def write(self, keys: Keys, planned: Mapping[str, float]) -> dict[str, PriceUpdate]:
        """One partition's unit, retried on the slot's primary now when the map is stale."""
        deadline = time.monotonic() + 20
        while True:
            try:
                return self._write(self._node(keys), keys, planned)
            except STALE:
                if time.monotonic() > deadline:
                    raise
                self._nodes.pop(keys.base, None)
                time.sleep(0.1)

    def heartbeat(self, index: int, status: bytes | None = None) -> None:
        """Partition ``index``'s producer heartbeat (3 s), and its status when given."""
        keys = self.layout.partition(index)
        node = self._node(keys)
        node.set(keys.producer, b"cluster-writer", ex=3)
        if status is not None:
            node.set(keys.producer_status, status, ex=3)

    def node(self, keys: Keys) -> redis.Redis:
        """The client of ``keys``' primary (for a test's own reads)."""
        return self._node(keys)

    def _node(self, keys: Keys) -> redis.Redis:
        client = self._nodes.get(keys.base)
        if client is None:
            port = self.group.primary_of(keys.seq).port
            client = self._nodes[keys.base] = self.group.node_client(port)
        return client

    def _write(self, client: redis.Redis, keys: Keys,
               planned: Mapping[str, float]) -> dict[str, PriceUpdate]:
        last = int(client.incrby(keys.seq, len(planned)))
        now = time.time()
        updates = {}
        for i, (ticker, price) in enumerate(planned.items()):
            seq = last - len(planned) + 1 + i
            updates[ticker] = PriceUpdate.create(ticker, price, self.prices.get(ticker), now,
                                                 seq, None)
        payloads = {t: encode_update(u) for t, u in updates.items()}
        pipe = client.pipeline(transaction=True)
        pipe.xadd(keys.ticks, {"map": encode_map(updates.values())},
                  id=f"{last}-{int(now * 1000)}")
        pipe.set(keys.epoch, new_epoch(), nx=True)
        pipe.hset(keys.latest, mapping=payloads)  # type: ignore[arg-type]
        for ticker, payload in payloads.items():
            pipe.execute_command("SPUBLISH", keys.price(ticker), payload)
        pipe.execute_command("SPUBLISH", keys.prices, encode_map(updates.values()))
        pipe.execute()
        if self.wait_replicas:
            client.execute_command("WAIT", 1, 200)  # none once its replica took over
        for ticker, update in updates.items():
            self.prices[ticker] = update.price
        return updates

    def close(self) -> None:
        for client in self._nodes.values():
            client.close()
        self._nodes.clear()


class Ticking:
    """The writer ticking every ``interval_s`` on a thread of the test's own."""

    def __init__(self, writer: ClusterWriter, interval_s: float) -> None:
        self.writer = writer
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.writer.tick()

    def __enter__(self) -> Ticking:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)
