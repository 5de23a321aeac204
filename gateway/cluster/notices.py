"""The `source` and `watchlist` events on a Cluster: the watchlist from the meta slot, the
source from the partitions' producers (docs/CLUSTER.md "The gateway on a Cluster")."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from gateway.cluster.clients import ClusterClients
from gateway.cluster.reads import read_heartbeat
from gateway.hub import Hub
from gateway.notices import Notices


class ClusterNotices(Notices):
    """`Notices` whose reads go to the primary serving each name."""

    def __init__(self, clients: ClusterClients, hub: Hub) -> None:
        # No one client: both reads below are this class's own.
        super().__init__(None, clients.layout.meta, hub)  # type: ignore[arg-type]
        self.clients = clients

    async def read_source(self) -> tuple[bool, bytes | None]:
        """A heartbeat of any partition's producer, and the status of the first partition
        that has one (every producer of a Cluster runs the same source); with no
        heartbeat at all, the first status found (it may say why: shared.status)."""
        found = await self.clients.each(read_heartbeat)
        live = [raw for beat, raw in found if beat and raw is not None]
        statuses = live or [raw for _, raw in found if raw is not None]
        return any(beat for beat, _ in found), statuses[0] if statuses else None

    async def read_members(self) -> set[Any]:
        meta = self.clients.layout.meta

        async def read(client: aioredis.Redis) -> set[Any]:
            members: set[Any] = await client.smembers(meta.watchlist)
            return members

        return await self.clients.meta(read)
