"""Reads of a Cluster's caches and logs, partition by partition (docs/CLUSTER.md).

Each partition is read as `gateway.reads.read_view` reads one server (one MULTI/EXEC on
the primary of its slot: a transaction's keys must share a slot), all partitions at once.
The partitions are read at slightly different moments: a reader may see one partition's
tick before another's, as docs/CLUSTER.md says of two units of one tick; each partition's
own view is consistent, which is all a position per partition needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.bars import read_bars
from gateway.cluster.clients import ClusterClients
from gateway.positions import Vector, cluster_epoch
from gateway.reads import CacheView, StreamView, read_cache, read_view
from shared.keys import Keys, partition_of
from shared.models import PriceUpdate
from shared.redisio import read_latest, read_latest_one


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Every partition's `StreamView` at about one moment, and what they make together:
    the updates of all tickers, the id epoch, and the first and last positions."""

    parts: list[StreamView]
    updates: dict[str, PriceUpdate]
    epoch: str
    first: Vector
    top: Vector


async def read_cluster_view(clients: ClusterClients) -> ClusterView:
    """The `ClusterView` now; raises a Redis error when a partition cannot be read."""
    parts = await clients.each(read_view)
    updates: dict[str, PriceUpdate] = {}
    for part in parts:
        updates.update(part.updates)
    return ClusterView(parts, updates, cluster_epoch([p.epoch for p in parts]),
                       Vector(p.first for p in parts), Vector(p.top for p in parts))


class OpeningViews:
    """`read_cluster_view` for stream openings, shared: a read of every partition is 16
    small transactions, and 250 clients opening at once (a gateway restart's reconnect
    storm) took 6-15 s with one read each (docs/PERFORMANCE.md, "The gateway on a
    Cluster"). At most one read is in flight; openings that ask while it runs share the
    next one, which starts when it ends. So every opening's read starts after the opening
    registered its client in the hub, as one read per opening did: no tick falls between.
    """

    def __init__(self, clients: ClusterClients) -> None:
        self.clients = clients
        self._next: asyncio.Future[ClusterView] | None = None
        self._running: asyncio.Task[ClusterView] | None = None

    async def read(self) -> ClusterView:
        """A view read that started after this call; raises as `read_cluster_view`."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieved)
        shared = self._next
        if self._running is None:
            self._launch()
        # Shielded: one opening cancelled (its client left) must not cancel the others'.
        return await asyncio.shield(shared)

    def _launch(self) -> None:
        shared, self._next = self._next, None
        assert shared is not None
        self._running = asyncio.create_task(read_cluster_view(self.clients))
        self._running.add_done_callback(lambda task: self._done(shared, task))

    def _done(self, shared: asyncio.Future[ClusterView], task: asyncio.Task[ClusterView]
              ) -> None:
        self._running = None
        if not shared.done():
            if task.cancelled():
                shared.cancel()
            elif (error := task.exception()) is not None:
                shared.set_exception(error)
            else:
                shared.set_result(task.result())
        if self._next is not None:  # asked while this read ran: theirs starts now
            self._launch()


def _retrieved(future: asyncio.Future[ClusterView]) -> None:
    """Mark an error as seen even when every opening that waited for it was cancelled."""
    if not future.cancelled():
        future.exception()


async def read_all_caches(clients: ClusterClients) -> CacheView:
    """Every partition's cache, as one `CacheView` (its ``last_seq`` means nothing here)."""
    updates: dict[str, PriceUpdate] = {}
    for view in await clients.each(read_cache):
        updates.update(view.updates)
    return CacheView(updates, None)


async def read_one(clients: ClusterClients, ticker: str) -> PriceUpdate | None:
    """The cached update of ``ticker``, from its partition."""
    keys = clients.layout.of(ticker)
    return await clients.call(keys, lambda client: read_latest_one(client, keys, ticker))


async def read_some(clients: ClusterClients,
                    tickers: Collection[str]) -> dict[str, PriceUpdate]:
    """The cached updates of ``tickers``, each from its partition."""
    layout = clients.layout
    wanted: dict[str, list[str]] = {}  # partition's base -> its tickers
    indexes: set[int] = set()
    for ticker in tickers:
        indexes.add(partition_of(ticker, layout.partitions))
        wanted.setdefault(layout.of(ticker).base, []).append(ticker)

    async def read(client: aioredis.Redis, keys: Keys) -> dict[str, PriceUpdate]:
        return await read_latest(client, keys, wanted[keys.base])

    out: dict[str, PriceUpdate] = {}
    for found in await clients.each(read, sorted(indexes)):
        out.update(found)
    return out


async def cluster_bars(clients: ClusterClients, ticker: str, interval: str, limit: int,
                       since: float | None) -> list[bytes] | None:
    """`gateway.bars.read_bars` of ``ticker``'s partition, the watchlist read from the
    meta slot."""
    meta, keys = clients.layout.meta, clients.layout.of(ticker)

    async def is_watched(client: aioredis.Redis) -> bool:
        return bool(await client.sismember(meta.watchlist, ticker))

    watched = await clients.meta(is_watched)
    return await clients.call(keys, lambda client: read_bars(
        client, keys, ticker, interval, limit, since, watched))


async def read_heartbeat(client: aioredis.Redis, keys: Keys) -> tuple[bool, bytes | None]:
    """Whether partition ``keys``' producer heartbeat lives, and its status JSON."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.exists(keys.producer)
        pipe.get(keys.producer_status)
        beat, raw = await pipe.execute()
    return bool(beat), raw
