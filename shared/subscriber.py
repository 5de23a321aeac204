"""A small subscriber API for other services: the cache snapshot, then live updates.

With nothing but a ``REDIS_URL``, on any topology (one server, Sentinel, a Cluster),
`Feed` does it all::

    from contextlib import aclosing
    from shared.subscriber import Feed

    async with Feed.from_url("redis+cluster://h1:7000,h2:7001") as feed:  # or Feed(settings)
        prices = await feed.snapshot()                     # {TICKER: PriceUpdate}
        async with aclosing(feed.subscribe(tickers=["AAPL"])) as batches:
            async for batch in batches:                    # Batch(updates, snapshot, reset)
                ...

The functions below take one server's client, as before::

    client = connect(Settings.from_env(), CONSUMER)        # REDIS_URL and its TLS files
    prices = await snapshot(client, Keys())
    async with aclosing(subscribe(client, Keys(), tickers=["AAPL"])) as batches: ...

`subscribe` subscribes to ``NS:prices`` *before* reading ``NS:latest``, so no tick falls
between the two; updates already covered by the snapshot (by ``seq``) are dropped. After
a lost connection it retries with capped backoff and yields a fresh snapshot batch
(``snapshot=True``) once Redis answers again, so a consumer never misses a price. When
``NS:epoch`` changes (a wiped Redis: the seqs may start over), the next batch is a fresh
snapshot with ``reset=True``: drop what you hold, it belongs to another dataset. On a
Cluster the same holds per partition (`shared.cluster_subscriber`, docs/CLUSTER.md
"Reading"): a later snapshot or reset speaks only for ``Batch.partitions`` (`Batch.covers`).

`consume` is the durable mode: it reads the tick log ``NS:ticks`` as a member of a
consumer group (XREADGROUP), acknowledges each tick after your handler returned, takes
pending ticks back after a crash, and raises `LogTrimmed` when the group fell so far
behind that ticks it never processed were trimmed away (`shared.durable`)::

    async def handle(entry: LogEntry) -> None:   # entry.seq, entry.ms, entry.updates
        ...
    await consume(client, Keys(), group="valuation", consumer="worker-1", handler=handle)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Collection
from contextlib import aclosing
from dataclasses import replace
from types import TracebackType
from typing import Any, Final

from redis.asyncio import Redis

from shared.backoff import Backoff
from shared.batches import Batch, Dataset, fresh, seqs
from shared.cluster_subscriber import LOST_ERRORS, Scope, follow
from shared.durable import Handler, LogTrimmed, consume, consume_cluster
from shared.errors import CodecError
from shared.keys import DEFAULT_NAMESPACE, Keys, Layout
from shared.models import PriceUpdate
from shared.redisio import (
    CONNECTION_ERRORS,
    CONSUMER,
    Profile,
    Snapshot,
    cluster_topology,
    connect,
    honour_cancel,
    read_latest,
    subscription,
)
from shared.redisio.cluster import ClusterTopology
from shared.redisio.shards import read_partition
from shared.settings import Settings

__all__ = ["Batch", "Feed", "Handler", "LogTrimmed", "consume", "snapshot", "subscribe"]

log = logging.getLogger(__name__)

NODE_REPLY_S: Final[float] = 10.0  # a Cluster node's reply at most (`consume` blocks 1 s)


async def snapshot(
    redis: Redis, keys: Keys, tickers: Collection[str] | None = None
) -> dict[str, PriceUpdate]:
    """The latest price of each ticker in ``NS:latest`` (only ``tickers`` when given).

    A malformed cache entry is logged and left out rather than failing the whole read.
    """
    return await read_latest(redis, keys, tickers)


async def subscribe(
    redis: Redis,
    keys: Keys,
    tickers: Collection[str] | None = None,
    *,
    backoff: Backoff | None = None,
    on_state: Callable[[bool], None] | None = None,
) -> AsyncGenerator[Batch, None]:
    """Yield a snapshot batch, then one batch per producer tick, forever.

    ``tickers`` narrows both; ``on_state(True|False)`` is told when the subscription is
    live or lost. Close it with ``aclosing`` (or by cancelling the task iterating it).
    """
    wanted = frozenset(tickers) if tickers is not None else None
    retry = backoff or Backoff(initial_s=0.2, cap_s=5.0)
    dataset = Dataset()
    down = False
    while True:
        try:
            async for batch in _session(redis, keys, wanted, dataset):
                if down or batch.snapshot:
                    retry.reset()
                    if down:
                        log.info("subscription to %s restored", keys.prices)
                    down = False
                    if on_state is not None:
                        on_state(True)
                yield batch
        except CONNECTION_ERRORS as e:
            # A cancel dropped by a Redis call (honour_cancel) is raised here too: while
            # Redis refuses us, the session fails before it reaches its own check, and
            # this loop would retry for ever.
            honour_cancel(asyncio.current_task())
            if not down:
                log.warning("lost Redis (%s); retrying with backoff", e or type(e).__name__)
                down = True
                if on_state is not None:
                    on_state(False)
            await asyncio.sleep(retry.next_delay())


async def _session(
    redis: Redis, keys: Keys, wanted: frozenset[str] | None, dataset: Dataset
) -> AsyncGenerator[Batch, None]:
    """One connection's worth of batches; raises a connection error when it breaks."""

    async def read() -> tuple[Any, dict[str, PriceUpdate]]:
        return await redis.get(keys.epoch), await snapshot(redis, keys, wanted)

    seen: dict[str, int] = {}
    bad = 0
    events = subscription(redis, (keys.prices,), read)
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Snapshot):
                # The first confirmation opens the session; another one means redis-py
                # reconnected and re-subscribed on its own: ticks may have been missed,
                # so the cache was read again.
                epoch, state = event.value
                seen = seqs(state)
                yield Batch(state, snapshot=True, reset=dataset.changed(epoch))
                continue
            current = await redis.get(keys.epoch)
            if current != dataset.epoch:  # a wiped Redis: this tick is in the new snapshot
                log.warning("%s changed: Redis holds a new dataset; taking its snapshot",
                            keys.epoch)
                reset = dataset.changed(current)
                state = await snapshot(redis, keys, wanted)
                seen = seqs(state)
                yield Batch(state, snapshot=True, reset=reset)
                continue
            try:
                updates = fresh(event.data, wanted, seen)
            except CodecError as e:
                bad += 1
                if bad == 1 or bad % 1000 == 0:  # one line per problem, not a flood
                    log.warning("skipped %d malformed tick message(s); last: %s", bad, e)
                continue
            if updates:
                yield Batch(updates, snapshot=False)


class Feed:
    """Prices from the Redis ``settings.redis_url`` names, on any topology: `snapshot`,
    `subscribe` and `consume` without knowing whether it is one server or a Cluster.

    On a Cluster the number of partitions is read from ``NS:{meta}:config`` (written by the
    first producer; ``PRICEFEED_PARTITIONS`` when it is not there yet), so a reader needs
    only the URL. Use it as an async context manager, or call `aclose`."""

    def __init__(self, settings: Settings, profile: Profile = CONSUMER) -> None:
        self.settings = settings
        self.client: Redis | None = None
        self.topology: ClusterTopology | None = None
        self._layout: Layout | None = None
        if settings.clustered:
            # No redis-py retries under a Cluster subscription: its silent reconnect would
            # resubscribe every partition in one SSUBSCRIBE, which a Cluster refuses. And a
            # bound on each reply: a node task waiting for ever on a hung node would never
            # let its partitions move on (a subscription's own reads carry their timeout).
            self.topology = cluster_topology(settings, replace(
                profile, retries=0, socket_timeout_s=profile.socket_timeout_s or NODE_REPLY_S))
        else:
            self.client = connect(settings, profile)
            self._layout = settings.layout

    @classmethod
    def from_url(cls, url: str, namespace: str = DEFAULT_NAMESPACE) -> Feed:
        """A Feed of ``url`` (any ``REDIS_URL`` form) under ``namespace``."""
        return cls(Settings.from_env({"REDIS_URL": url, "PRICEFEED_NAMESPACE": namespace}))

    async def layout(self, backoff: Backoff | None = None) -> Layout:
        """Where the names live; on a Cluster, asked once (retried with ``backoff``)."""
        if self._layout is not None:
            return self._layout
        assert self.topology is not None
        retry = backoff or Backoff(initial_s=0.1, cap_s=2.0)
        meta = self.settings.layout.meta
        while True:
            try:
                await self.topology.refresh(force=retry.attempts > 0)
                raw = await self.topology.client_for(meta).hget(meta.config, "partitions")
                break
            except LOST_ERRORS as e:
                honour_cancel(asyncio.current_task())
                if not retry.attempts:  # one line per outage, not one per retry
                    log.warning("cannot read %s yet (%s); retrying with backoff",
                                meta.config, e or type(e).__name__)
                await asyncio.sleep(retry.next_delay())
        count = int(raw) if raw else self.settings.partitions
        if count != self.settings.partitions:
            log.info("the Cluster has %d partitions (%s); following those", count, meta.config)
        self._layout = Layout(self.settings.namespace, count)
        return self._layout

    def client_for(self, keys: Keys) -> Redis:
        """The client serving ``keys``' names (on a Cluster: as last known)."""
        if self.topology is not None:
            return self.topology.client_for(keys)
        assert self.client is not None
        return self.client

    async def recheck(self) -> None:
        """After a command of yours was refused or lost: on a Cluster, ask it for its slot
        map again (at most every `REFRESH_MIN_S`), so `client_for` follows a moved slot."""
        if self.topology is not None:
            with contextlib.suppress(*LOST_ERRORS):
                await self.topology.refresh()

    async def snapshot(self, tickers: Collection[str] | None = None) -> dict[str, PriceUpdate]:
        """The cached price of each ticker (of ``tickers`` only, when given)."""
        if self.client is not None:
            return await snapshot(self.client, self.settings.keys, tickers)
        scope = Scope(await self.layout(), frozenset(tickers) if tickers is not None else None)
        out: dict[str, PriceUpdate] = {}
        for index in scope.partitions:
            out |= await self._partition(scope, index)
        return out

    async def _partition(self, scope: Scope, index: int) -> dict[str, PriceUpdate]:
        assert self.topology is not None
        keys = scope.layout.partition(index)
        for attempt in range(3):  # a stale map: ask the Cluster again, twice at most
            try:
                return (await read_partition(self.topology.client_for(keys), keys,
                                             scope.wanted(index)))[1]
            except LOST_ERRORS:
                if attempt == 2:
                    raise
                await self.topology.refresh(force=True)
        raise AssertionError("unreachable")

    async def subscribe(self, tickers: Collection[str] | None = None, *,
                        backoff: Backoff | None = None,
                        on_state: Callable[[bool], None] | None = None
                        ) -> AsyncGenerator[Batch, None]:
        """`subscribe` on one server, `shared.cluster_subscriber.follow` on a Cluster."""
        if self.client is not None:
            batches = subscribe(self.client, self.settings.keys, tickers, backoff=backoff,
                                on_state=on_state)
        else:
            assert self.topology is not None
            batches = follow(self.topology, await self.layout(backoff), tickers,
                             backoff=backoff, on_state=on_state)
        async with aclosing(batches):
            async for batch in batches:
                yield batch

    async def consume(self, group: str, consumer: str, handler: Handler, **options: Any
                      ) -> None:
        """`consume` on one server, `shared.durable.consume_cluster` on a Cluster (every
        partition's log; ``handler`` may run for two partitions at once)."""
        if self.client is not None:
            await consume(self.client, self.settings.keys, group, consumer, handler,
                          **options)
            return
        assert self.topology is not None
        await consume_cluster(self.topology, await self.layout(options.get("backoff")),
                              group, consumer, handler, **options)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.topology is not None:
            await self.topology.aclose()

    async def __aenter__(self) -> Feed:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
