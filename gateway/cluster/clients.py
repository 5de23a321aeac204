"""The gateway's pooled clients of a Cluster's primaries, and the one way to use them.

Every read or write of a route, of the stream's opening or of the notices names the
`Keys` it touches; `ClusterClients.call` sends it to the primary serving their slot. A
``MOVED`` reply (`MovedError`), a lost node, or a slot not known yet means the map is stale
(a failover, a slot migration, a gateway started before its Cluster): the map is asked
again and the call made once more, then the error goes to the caller (a route answers
503, docs/CLUSTER.md "The gateway on a Cluster").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.keys import Keys, Layout
from shared.redisio.cluster import ClusterTopology, ClusterUnavailable

T = TypeVar("T")

# What a stale slot map looks like: a node gone, a slot moved, a demoted primary.
STALE = (MovedError, ReadOnlyError, RedisConnectionError, RedisTimeoutError, OSError,
         ClusterUnavailable)


class ClusterClients:
    """One pooled client per primary (`shared.redisio.ClusterTopology`), by slot."""

    def __init__(self, topology: ClusterTopology, layout: Layout) -> None:
        self.topology = topology
        self.layout = layout
        from gateway.cluster.reads import OpeningViews  # reads builds on these clients
        self.opening_views = OpeningViews(self)

    async def call(self, keys: Keys, use: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``use(client)`` with the client of ``keys``' primary; once more after a refresh
        of the slot map when the map proved stale."""
        try:
            return await use(self.topology.client_for(keys))
        except STALE:
            await self.topology.refresh(force=True)
        return await use(self.topology.client_for(keys))

    async def each(self, use: Callable[[aioredis.Redis, Keys], Awaitable[T]],
                   indexes: Iterable[int] | None = None) -> list[T]:
        """``use(client, keys)`` for every partition (of ``indexes`` only, when given) at
        once, in that order."""
        async def one(keys: Keys) -> T:
            return await self.call(keys, lambda client: use(client, keys))

        scopes = self.layout.all() if indexes is None else [
            self.layout.partition(i) for i in indexes]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(k)) for k in scopes]
        except BaseExceptionGroup as failed:  # the first error, as one call would raise it
            raise failed.exceptions[0] from None
        return [t.result() for t in tasks]

    async def meta(self, use: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``use(client)`` on the primary of the meta names (watchlist, control, config)."""
        return await self.call(self.layout.meta, use)

    async def aclose(self) -> None:
        await self.topology.aclose()
