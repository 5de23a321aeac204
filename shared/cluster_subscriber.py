"""Following prices on a Redis Cluster (docs/CLUSTER.md "Reading").

One connection per primary node carries that node's partitions' ``NS:{pI}:prices``
subscriptions, one ``SSUBSCRIBE`` per partition (a command takes the channels of one
slot), and is read by its own task (`shared.redisio.shards`), so a quiet or slow node
never delays another's ticks (redis-py's ClusterPubSub reads its nodes in turn).

`follow` merges what the node tasks send into `Batch`es, keeps the seq held per ticker and
each partition's epoch (`Dataset`) across connections, and re-plans when a node task
ends: a lost node, a ``MOVED`` reply, a ``sunsubscribe`` the server pushed for a slot that
moved, or a quiet connection that no longer answers a PING. Re-planning asks the Cluster
for its slot map again and starts a task per node whose set of partitions changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final

from shared.backoff import Backoff
from shared.batches import Batch, Dataset, fresh, seqs
from shared.errors import CodecError
from shared.keys import Layout, partition_of
from shared.models import PriceUpdate
from shared.redisio import CONNECTION_ERRORS, honour_cancel
from shared.redisio.cluster import SLOT_ERRORS, Address, ClusterTopology
from shared.redisio.shards import (
    NodeEnded,
    NodeEvent,
    NodeSnapshot,
    NodeTick,
    read_node,
)

log = logging.getLogger(__name__)

QUEUE_SIZE: Final[int] = 1024  # node tasks wait (and Redis buffers) past this many events
# What ends a node's task and makes `follow` ask the Cluster where its partitions are now
# (a `SlotMoved` or a `StaleSubscription` is a connection error).
LOST_ERRORS: Final[tuple[type[BaseException], ...]] = (*CONNECTION_ERRORS, *SLOT_ERRORS)


@dataclass(frozen=True, slots=True)
class Scope:
    """What the reader follows: the partitions of the wanted tickers (all of them when
    ``tickers`` is None), and the wanted tickers of each."""

    layout: Layout
    tickers: frozenset[str] | None

    @property
    def partitions(self) -> list[int]:
        if self.tickers is None:
            return list(range(self.layout.partitions))
        return sorted({partition_of(t, self.layout.partitions) for t in self.tickers})

    def wanted(self, index: int) -> frozenset[str] | None:
        if self.tickers is None:
            return None
        return frozenset(t for t in self.tickers
                         if partition_of(t, self.layout.partitions) == index)


@dataclass(slots=True)
class _Reader:
    task: asyncio.Task[None]
    address: Address
    partitions: frozenset[int]


class _Follower:
    """The node tasks of one `follow`, and what it holds across them."""

    def __init__(self, topology: ClusterTopology, scope: Scope, retry: Backoff) -> None:
        self.topology, self.scope, self.retry = topology, scope, retry
        self.count = scope.layout.partitions
        self.queue: asyncio.Queue[NodeEvent] = asyncio.Queue(QUEUE_SIZE)
        self.readers: dict[int, _Reader] = {}
        self.next_ident = 0
        self.datasets = {i: Dataset() for i in scope.partitions}
        self.seen: dict[str, int] = {}
        self.awaiting = set(scope.partitions)  # partitions whose snapshot is not in yet
        self.initial: dict[str, PriceUpdate] | None = {}  # the first batch, being gathered
        self.replan_at: float | None = 0.0
        self.down = False  # a node task ended and its partitions are not back yet
        self.bad = 0

    async def next_event(self) -> NodeEvent | None:
        """The next event of a node task; None when it is time to re-plan."""
        loop = asyncio.get_running_loop()
        if self.replan_at is not None and loop.time() >= self.replan_at:
            await self.replan()
            return None
        timeout = None if self.replan_at is None else self.replan_at - loop.time()
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        finally:
            honour_cancel(asyncio.current_task())
        return event if event.reader in self.readers else None  # a retired task's

    async def replan(self) -> None:
        """Ask the Cluster where each partition is, and give every node whose set of
        partitions changed a new task (the others keep theirs)."""
        try:
            await self.topology.refresh(force=True)
            plan = {address: frozenset(group) for address, group in self.topology.group(
                {i: self.scope.layout.partition(i) for i in self.scope.partitions}).items()}
        except LOST_ERRORS as e:
            self.lost(f"the Cluster's slot map ({e or type(e).__name__})")
            return
        self.replan_at = None
        for ident, reader in list(self.readers.items()):
            if plan.get(reader.address) != reader.partitions:
                await self.retire(ident)
        running = {reader.address for reader in self.readers.values()}
        for address, group in plan.items():
            if address not in running:
                self.start(address, group)

    def start(self, address: Address, partitions: frozenset[int]) -> None:
        ident, self.next_ident = self.next_ident, self.next_ident + 1
        wanted = {i: (self.scope.layout.partition(i), self.scope.wanted(i))
                  for i in sorted(partitions)}
        task = asyncio.create_task(read_node(
            ident, self.topology.client_at(address), wanted, self.queue),
            name=f"cluster-subscriber-{address[0]}:{address[1]}")
        self.readers[ident] = _Reader(task, address, partitions)
        self.awaiting |= partitions

    async def retire(self, ident: int) -> None:
        reader = self.readers.pop(ident)
        reader.task.cancel()
        await asyncio.wait({reader.task})
        self.awaiting |= reader.partitions

    def lost(self, what: str) -> None:
        """A node task ended, or the slot map could not be read: re-plan after a backoff."""
        if not self.down:
            log.warning("lost %s; asking the Cluster again and resubscribing", what)
        self.down = True
        self.replan_at = asyncio.get_running_loop().time() + self.retry.next_delay()

    async def ended(self, event: NodeEnded) -> None:
        reader = self.readers[event.reader]
        if not isinstance(event.error, LOST_ERRORS):
            raise event.error
        await self.retire(event.reader)
        error = event.error
        self.lost(f"the subscription on {reader.address[0]}:{reader.address[1]} "
                  f"({type(error).__name__}: {error})")

    def snapped(self, event: NodeSnapshot) -> Batch | None:
        """A partition's snapshot: gathered into the first batch, then one batch each."""
        i = event.partition
        self.awaiting.discard(i)
        reset = self.datasets[i].changed(event.epoch)
        if reset:  # another dataset: its seqs start over
            for held in (self.seen, self.initial or {}):
                for ticker in [t for t in held if partition_of(t, self.count) == i]:
                    del held[ticker]
        if self.initial is not None:  # (a reset before it went out is no reset to the user)
            self.seen.update(seqs(event.state))
            self.initial.update(event.state)
            return None
        if reset:
            self.seen.update(seqs(event.state))
            return self._batch(event.state, i, reset=True)
        newer = {t: u for t, u in event.state.items() if u.seq > self.seen.get(t, -1)}
        self.seen.update(seqs(newer))
        return self._batch(newer, i, reset=False) if newer else None

    def _batch(self, updates: Mapping[str, PriceUpdate], index: int, reset: bool) -> Batch:
        return Batch(updates, snapshot=True, reset=reset, partitions=frozenset({index}),
                     partition_count=self.count)

    def ticked(self, event: NodeTick) -> Batch | None:
        try:
            updates = fresh(event.payload, self.scope.wanted(event.partition), self.seen)
        except CodecError as e:
            self.bad += 1
            if self.bad == 1 or self.bad % 1000 == 0:  # one line per problem, not a flood
                log.warning("skipped %d malformed tick message(s); last: %s", self.bad, e)
            return None
        if self.initial is not None:
            self.initial.update(updates)
            return None
        return Batch(updates, snapshot=False) if updates else None

    @property
    def state(self) -> bool | None:
        """True once the first batch went out and while nothing is lost; False while
        something is; None before the first batch."""
        return False if self.down else None if self.initial is not None else True

    def restored(self) -> Batch | None:
        """The first batch once every partition's snapshot is in; None otherwise."""
        if self.awaiting or self.replan_at is not None:
            return None
        if self.down:
            log.info("Cluster subscription restored")
        self.down = False
        self.retry.reset()
        if self.initial is None:
            return None
        first, self.initial = self.initial, None
        return Batch(first, snapshot=True, partition_count=self.count)

    async def aclose(self) -> None:
        for ident in list(self.readers):
            await self.retire(ident)


async def follow(
    topology: ClusterTopology,
    layout: Layout,
    tickers: Collection[str] | None = None,
    *,
    backoff: Backoff | None = None,
    on_state: Callable[[bool], None] | None = None,
) -> AsyncGenerator[Batch, None]:
    """`shared.subscriber.subscribe` on a Cluster: a snapshot batch of every wanted ticker,
    then one batch per partition's tick message, forever; after a lost node or a moved
    slot, a snapshot batch per partition resubscribed (``Batch.partitions``) with what is
    newer than what was yielded, or all of it with ``reset`` when its epoch changed."""
    scope = Scope(layout, frozenset(tickers) if tickers is not None else None)
    follower = _Follower(topology, scope, backoff or Backoff(initial_s=0.1, cap_s=2.0))
    told: bool | None = None
    try:
        while True:
            event = await follower.next_event()
            batch: Batch | None = None
            if isinstance(event, NodeEnded):
                await follower.ended(event)
            elif isinstance(event, NodeSnapshot):
                batch = follower.snapped(event)
            elif isinstance(event, NodeTick):
                batch = follower.ticked(event)
            first = follower.restored()
            state = follower.state
            if state is not None and state != told and on_state is not None:
                on_state(state)
            told = state if state is not None else told
            for out in (first, batch):
                if out is not None:
                    yield out
    finally:
        await follower.aclose()
