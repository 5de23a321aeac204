"""The hub on a Cluster: the same mailboxes, with one position and epoch per partition.

Each partition has its own seq, log and epoch (docs/CLUSTER.md), so the hub's position is
a `Vector` and a tick of partition ``i`` at seq ``p`` moves component ``i`` only. A
partition is (re)subscribed on its own, after a failover or a slot move of its node, and
resynced on its own: under the same partition epoch every client gets only what changed
in that partition (no seq sent twice, as `Hub._catch_up` on one server); when the
partition's epoch changed, or its log now ends before what was sent, every client gets
`event: reset` and the whole snapshot (docs/CLUSTER.md "The gateway on a Cluster").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from gateway.hub import NO_EPOCH, Changes, Client, Hub, _offer
from gateway.positions import Vector, cluster_epoch, component, join
from gateway.stats import Stats
from gateway.updates import EncodedUpdate
from shared.keys import partition_of

log = logging.getLogger(__name__)


class ClusterHub(Hub):
    """A `Hub` whose position is a `Vector` of ``partitions`` log positions."""

    def __init__(self, stats: Stats, partitions: int) -> None:
        super().__init__(stats)
        self.partitions = partitions
        self.epochs = [NO_EPOCH] * partitions
        self.epoch = cluster_epoch(self.epochs)
        self.vector = Vector.zero(partitions)
        self.pos = self.vector

    def publish_partition(self, index: int, tick: Mapping[str, EncodedUpdate], seq: int) -> None:
        """Mark partition ``index``'s tick at ``seq`` on every client that has not covered
        it; a tick at or below the partition's last position is already covered."""
        self.publish_partitions([(index, tick, seq)])

    def publish_partitions(self, ticks: Sequence[tuple[int, Mapping[str, EncodedUpdate], int]]
                           ) -> None:
        """Partition ticks ``(index, tick, seq)`` received together, in order, as ONE batch
        on every client: one offer and one event per client for all of them, not one per
        partition (docs/PERFORMANCE.md, "The gateway on a Cluster"). A tick at or below its
        partition's last position is already covered; a client whose floor covers some of
        the partitions (resynced since) gets only the others."""
        vector = self.vector
        merged: dict[str, EncodedUpdate] = {}
        parts: list[tuple[int, int, Mapping[str, EncodedUpdate]]] = []
        for index, tick, seq in ticks:
            if tick and seq > vector[index]:
                vector = vector.replace(index, seq)
                merged.update(tick)
                parts.append((index, seq, tick))
        if not parts:
            return
        self.vector = self.pos = pos = vector
        self.latest.update(merged)
        self.stats.ticks += len(parts)
        whole = Changes(merged, pos)
        by_filter: dict[frozenset[str], Changes | None] = {}
        conflated = 0
        for client in self.clients:
            floor = client.floor
            if any(seq <= component(floor, i) for i, seq, _ in parts):
                batch = self._newer_than(client, parts, pos)  # rare: after a resync
            elif client.tickers is None:
                batch = whole
            else:
                batch = by_filter.get(client.tickers, whole)
                if batch is whole:
                    sub = {t: merged[t] for t in client.tickers if t in merged}
                    batch = by_filter[client.tickers] = Changes(sub, pos) if sub else None
            if batch is not None:
                conflated += _offer(client, batch)
        self.stats.conflated += conflated

    @staticmethod
    def _newer_than(client: Client, parts: list[tuple[int, int, Mapping[str, EncodedUpdate]]],
                    pos: Vector) -> Changes | None:
        """The updates of ``parts`` a client has not covered, within its filter."""
        items: dict[str, EncodedUpdate] = {}
        for index, seq, tick in parts:
            if seq > component(client.floor, index):
                items.update(tick if client.tickers is None
                             else {t: u for t, u in tick.items() if t in client.tickers})
        return Changes(items, pos) if items else None

    def first_epoch(self, index: int, epoch: str) -> None:
        """Partition ``index`` got its first tick ever: its epoch is known now. Nothing
        was sent under another one, so it is no reset (as `NO_EPOCH` on one server)."""
        self.epochs[index] = epoch
        self.epoch = cluster_epoch(self.epochs)

    def resync_partition(self, index: int, snapshot: Mapping[str, EncodedUpdate], epoch: str,
                         top: int) -> None:
        """Partition ``index`` (re)subscribed: its cache ``snapshot``, epoch and log end."""
        old_epoch, old_top = self.epochs[index], self.vector[index]
        reset = old_epoch != NO_EPOCH and (epoch != old_epoch or top < old_top)
        mine = [t for t in self.latest if partition_of(t, self.partitions) == index]
        old = {t: self.latest.pop(t) for t in mine}
        self.latest.update(snapshot)
        self.epochs[index] = epoch
        self.epoch = cluster_epoch(self.epochs)
        self.vector = self.pos = self.vector.replace(index, top)
        if reset:
            log.warning("partition %d holds another dataset now (epoch or log end changed); "
                        "clients get a reset", index)
            self._reset_all()
        else:
            self._catch_up_partition(index, old, snapshot)

    def _whole(self, tickers: frozenset[str] | None) -> Changes:
        latest = self.latest
        items = latest if tickers is None else {t: latest[t] for t in tickers if t in latest}
        return Changes(dict(items), self.vector)

    def _reset_all(self) -> None:
        by_filter: dict[frozenset[str] | None, Changes] = {}
        for client in self.clients:
            key = client.tickers
            if key not in by_filter:
                by_filter[key] = self._whole(key)
            client.reset = True
            client.last_pos = 0
            self._resync_one(client, by_filter[key], self.vector)

    def _catch_up_partition(self, index: int, old: Mapping[str, EncodedUpdate],
                            snapshot: Mapping[str, EncodedUpdate]) -> None:
        """The updates of the partition newer than the hub had (every client was marked
        each tick up to it) and than the client's own floor (its opening may have read
        further), merged into what each client has pending."""
        newer = {t: u for t, u in snapshot.items() if t not in old or u[0] > old[t][0]}
        pos = self.vector
        batches: dict[tuple[frozenset[str] | None, int], Changes] = {}
        for client in self.clients:
            key = client.tickers
            if not client.last_pos:  # never got its first snapshot: the whole one
                self._resync_one(client, self._whole(key), pos)
                continue
            floor = component(client.floor, index)
            batch = batches.get((key, floor))
            if batch is None:
                batch = batches[(key, floor)] = Changes(
                    {t: u for t, u in newer.items()
                     if (key is None or t in key) and u[0] > floor}, pos)
            if client.resync is not None:  # an earlier snapshot not sent yet: bring it up
                self._resync_one(client, Changes({**client.resync.items, **batch.items}, pos),
                                 pos)
            elif batch.items:
                self.stats.conflated += _offer(client, batch)
            client.floor = join(client.floor, pos)

    @staticmethod
    def _resync_one(client: Client, snapshot: Changes, pos: object) -> None:
        client.resync = snapshot
        client.floor = join(client.floor, snapshot.pos) if client.last_pos else snapshot.pos
        client.wake.set()
