"""``event: bar`` on a Cluster (docs/CLUSTER.md "The gateway on a Cluster"): the closes of
every partition's ``NS:{pI}:bars:{1s|1m}`` shard channels arrive on the node subscriptions
of the price feed (`gateway.cluster.session` subscribes them with the partition's prices
channel, one slot, one command), and the forming bars are read from every partition's
``NS:{pI}:forming:*`` once a second, as `gateway.bar_feed` does on one server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.bar_feed import FORMING_EVERY_S, BarFeed
from gateway.cluster.clients import ClusterClients
from gateway.hub import Hub
from gateway.stream.framing import bar_frame
from shared.bars import INTERVALS
from shared.keys import Keys

log = logging.getLogger(__name__)


class ClusterBarFeed(BarFeed):
    """`BarFeed` whose closes come from the node sessions and whose forming bars are read
    partition by partition."""

    def __init__(self, clients: ClusterClients, hub: Hub) -> None:
        # No one client: the closes come through `on_close`, the reads are this class's.
        super().__init__(clients.layout.meta, hub, None, None)  # type: ignore[arg-type]
        self.clients = clients
        self._channels = {keys.bar_channel(name): name
                          for keys in clients.layout.all() for name in INTERVALS}

    async def run(self) -> None:
        """Send the forming bars once a second until cancelled."""
        failed = False
        while True:
            await asyncio.sleep(FORMING_EVERY_S)
            try:
                await self.send_forming()
            except (RedisError, OSError) as e:
                if not failed:
                    log.warning("cannot read the forming bars (%s: %s); retrying",
                                type(e).__name__, e)
                failed = True
            else:
                failed = False

    async def send_forming(self) -> None:
        for interval, tickers in self.hub.bar_wanted().items():
            bars = self.forming_bars(await self._forming(interval, tickers))
            if bars:
                self.hub.publish_bars(interval, bars, bar_frame)

    async def _forming(self, interval: str, tickers: frozenset[str] | None) -> dict[Any, Any]:
        """The stored forming bars of ``interval`` (of ``tickers`` only, when given), from
        every partition."""
        wanted = None if tickers is None else sorted(tickers)

        async def read(client: aioredis.Redis, keys: Keys) -> dict[Any, Any]:
            key = keys.forming(interval)
            if wanted is None:
                found: dict[Any, Any] = await client.hgetall(key)
                return found
            return dict(zip(wanted, await client.hmget(key, wanted), strict=True))

        raw: dict[Any, Any] = {}
        for part in await self.clients.each(read):
            raw.update({t: v for t, v in part.items() if v is not None})
        return raw
