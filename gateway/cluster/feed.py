"""The price subscription on a Cluster: one connection per primary, every partition's
``NS:{pI}:prices`` sharded-subscribed on the node serving it (docs/CLUSTER.md, "Reading").

`ClusterPriceFeed.run` keeps one task per primary (`_NodeSession`). A session sends one
``SSUBSCRIBE`` per partition (a command takes channels of one slot), and on each
confirmation reads that partition's view (epoch, log span, cache) and resyncs it in the
hub (`ClusterHub.resync_partition`); then every message of a partition moves the hub's
position in that partition only. What the sessions read is held `COALESCE_S` and handed
to the hub together, so one producer tick is one event for a client. A lost connection,
a ``sunsubscribe`` pushed for a slot that moved, a ``MOVED`` on a read or a PING left
unanswered end the session of that node only: the slot map is asked again and the
affected partitions subscribed on their node now, the other nodes' sessions going on
untouched.

As on one server (`gateway.price_feed`), the subscription's clients have redis-py's
retries off and each tick is checked against its partition's epoch and seq.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from redis.exceptions import RedisError

from gateway.cluster.clients import ClusterClients
from gateway.cluster.hub import ClusterHub
from gateway.cluster.session import NodeSession
from gateway.price_feed import FLAP_LOSSES, FLAP_WINDOW_S
from gateway.stats import Stats
from gateway.updates import EncodedUpdate
from shared.backoff import Backoff
from shared.keys import Layout
from shared.logs import LogThrottle
from shared.redisio.cluster import Address, ClusterTopology

log = logging.getLogger(__name__)

META = -1  # the index of the meta names (the control channel) among the partitions
RECHECK_S = 5.0  # how often the slot map is asked again with every session healthy
# How long partition ticks are held for the hub, so that the parts of one producer tick
# that reach the gateway through different nodes go out as one event: without it a
# client got ~5 events per producer tick (3 primaries, P = 16), each costing a write
# (docs/PERFORMANCE.md, "The gateway on a Cluster"). It adds at most this to latency.
COALESCE_S = 0.003


class ClusterPriceFeed:
    """Keeps every partition subscribed on the primary serving it, and feeds the hub."""

    def __init__(self, layout: Layout, hub: ClusterHub, stats: Stats,
                 topology: ClusterTopology, on_control: Callable[[], None] | None = None,
                 probe_after_s: float = 2.0, probe_timeout_s: float = 2.0,
                 on_bars: Callable[[bytes, bytes], None] | None = None,
                 publisher: ClusterClients | None = None) -> None:
        self.layout = layout
        self.hub = hub
        self.stats = stats
        self.topology = topology
        self.on_control = on_control
        self.on_bars = on_bars  # told of each bar close (``NS:{pI}:bars:*``)
        # The delivery probe's publisher (the path every other publish takes); without
        # one, a quiet node subscription is probed with a PING.
        self.publisher = publisher
        self.instance = uuid.uuid4().hex[:12]
        self.probe_after_s = probe_after_s
        self.probe_timeout_s = probe_timeout_s
        self.subscribed: set[int] = set()  # partitions whose snapshot the hub holds
        self.control_subscribed = on_control is None
        self._sessions: dict[Address, tuple[asyncio.Task[None], frozenset[int]]] = {}
        self._backoff = Backoff(initial_s=0.1, cap_s=2.0)
        self._failed = False  # a loss was announced; cleared once all are subscribed again
        # Per node, the times its session was lost with no tick delivered since.
        self._losses: dict[Address, collections.deque[float]] = {}
        self._flap_log = LogThrottle(log, 10.0)
        self._map_log = LogThrottle(log, 10.0)  # a Cluster down: one line per 10 s
        self._held: list[tuple[int, Mapping[str, EncodedUpdate], int]] = []
        self._flush_at: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        """Every partition (and the control channel) subscribed, its snapshot taken."""
        return len(self.subscribed) == self.layout.partitions and self.control_subscribed

    @property
    def flapping(self) -> int:
        """The most losses of one node's session within `FLAP_WINDOW_S` with no tick
        delivered through it since, when `FLAP_LOSSES` or more (as `PriceFeed.flapping`,
        node by node); else 0."""
        now = time.monotonic()
        worst = 0
        for losses in self._losses.values():
            while losses and losses[0] < now - FLAP_WINDOW_S:
                losses.popleft()
            worst = max(worst, len(losses))
        return worst if worst >= FLAP_LOSSES else 0

    def missing(self) -> list[int]:
        """The partitions not subscribed now, in order."""
        return [i for i in range(self.layout.partitions) if i not in self.subscribed]

    async def run(self) -> None:
        """Subscribe every partition and keep them subscribed; runs until cancelled."""
        try:
            while True:
                try:
                    await self.topology.refresh(force=True)
                    wanted = self._groups()
                except (RedisError, OSError) as e:
                    self._map_log.warning("cannot read the Cluster's slot map (%s); retrying",
                                          e)
                    await asyncio.sleep(self._backoff.next_delay())
                    continue
                await self._apply(wanted)
                await self._watch()
        finally:
            if self._flush_at is not None:
                self._flush_at.cancel()
            await self._stop([*self._sessions])

    def publish(self, ticks: Sequence[tuple[int, Mapping[str, EncodedUpdate], int]]) -> None:
        """Partition ticks ``(index, tick, seq)`` a node's session read, in order: held
        `COALESCE_S`, with whatever the other nodes read meanwhile, then handed to the hub
        together (`ClusterHub.publish_partitions`)."""
        self._held.extend(ticks)
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(COALESCE_S, self.flush)

    def flush(self) -> None:
        """Hand the held ticks to the hub now: when the timer fires, and before a partition
        is resynced, so nothing read before a resync reaches the hub after it."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        ticks, self._held = self._held, []
        if ticks:
            self.hub.publish_partitions(ticks)

    def _groups(self) -> dict[Address, frozenset[int]]:
        scopes = dict(enumerate(self.layout.all()))
        if self.on_control is not None:
            scopes[META] = self.layout.meta
        return {a: frozenset(p) for a, p in self.topology.group(scopes).items()}

    async def _apply(self, wanted: dict[Address, frozenset[int]]) -> None:
        """Stop the sessions whose node now serves other partitions; start the missing."""
        for gone in [a for a in self._losses if a not in wanted]:  # no longer a primary
            del self._losses[gone]
        await self._stop([a for a, (_, parts) in self._sessions.items()
                          if wanted.get(a) != parts])
        for address, parts in wanted.items():
            if address not in self._sessions:
                session = NodeSession(self, address, parts)
                task = asyncio.create_task(session.run(), name=f"cluster-node-{address[1]}")
                self._sessions[address] = (task, parts)

    async def _watch(self) -> None:
        """Until a session ends (its error logged) or `RECHECK_S` passed."""
        tasks = [task for task, _ in self._sessions.values()]
        done, _ = await asyncio.wait(tasks, timeout=RECHECK_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        ended = [a for a, (task, _) in self._sessions.items() if task in done]
        for address in ended:
            task, parts = self._sessions.pop(address)
            self._forget(parts)
            self._lost(address, task.exception())
        if ended:
            await asyncio.sleep(self._backoff.next_delay())

    def _lost(self, address: Address, error: BaseException | None) -> None:
        losses = self._losses.setdefault(address, collections.deque())
        news = not losses  # else this node has delivered nothing since its last loss
        losses.append(time.monotonic())
        what = f"{type(error).__name__}: {error}"
        if news:
            self._failed = True
            log.warning("Cluster node %s:%d subscription lost (%s); resubscribing its "
                        "partitions", *address, what)
        elif self.flapping:
            self._flap_log.warning(
                "Cluster node %s:%d subscription keeps dropping: lost %d times in the last "
                "%.0f s with no tick delivered (last: %s); check the node's "
                "client-output-buffer-limit for pubsub", *address, len(losses),
                FLAP_WINDOW_S, what)

    async def _stop(self, addresses: list[Address]) -> None:
        """Cancel those sessions and wait for them all (their errors no longer matter:
        they are being replaced, or the gateway stops)."""
        stopping = [self._sessions.pop(a) for a in addresses]
        for task, _ in stopping:
            task.cancel()
        if stopping:
            await asyncio.wait([task for task, _ in stopping])
        for task, parts in stopping:
            if not task.cancelled():
                task.exception()  # retrieved: a replaced session's error is no news
            self._forget(parts)

    def _forget(self, parts: frozenset[int]) -> None:
        self.subscribed -= parts
        if META in parts and self.on_control is not None:
            self.control_subscribed = False

    def opened(self, index: int) -> None:
        """Partition ``index`` (or `META`) is subscribed and the hub holds its snapshot."""
        if index == META:
            self.control_subscribed = True
            if self.on_control is not None:
                self.on_control()  # changes made while it was down
        else:
            self.subscribed.add(index)
        if self.connected and self._failed:
            self._failed = False
            self.stats.redis_reconnects += 1
            log.info("Cluster subscriptions re-established; clients got what they missed")

    def delivered(self, address: Address) -> None:
        """A tick came through the session of ``address``: it works."""
        self._backoff.reset()
        losses = self._losses.get(address)
        if losses:
            losses.clear()
