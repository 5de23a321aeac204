"""What the routes depend on: the gateway's shared state, and the one way to get it.

`create_app`'s lifespan builds one `Gateway` per app; a route asks for it with the typed
dependency `GatewayDep` (the stream endpoint, a bare ASGI app, calls `gateway_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import redis.asyncio as aioredis
from fastapi import Depends
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from gateway.cluster.clients import ClusterClients
    from gateway.cluster.feed import ClusterPriceFeed
    from gateway.verifier import Verifier

from gateway.hub import Hub
from gateway.notices import Notices
from gateway.price_feed import PriceFeed
from gateway.stats import Stats
from gateway.stream.liveness import SendWatchdog
from shared.settings import Settings


@dataclass(slots=True)
class Gateway:
    """One per app: settings, the Redis client for reads and writes, the hub, the counters.

    On a Cluster there is no one client: ``cluster`` sends each call to the primary of its
    names, and `redis` raises (a one-server read left on a Cluster path is a 503, not a
    read of the wrong node)."""

    settings: Settings
    one_server: aioredis.Redis | None
    hub: Hub
    stats: Stats
    price_feed: PriceFeed | ClusterPriceFeed
    registry: CollectorRegistry
    watchdog: SendWatchdog
    notices: Notices
    verifier: Verifier | None = None  # None: reads are open (PRICEFEED_READ_AUTH=none)
    cluster: ClusterClients | None = None  # on a Cluster (docs/CLUSTER.md)

    @property
    def redis(self) -> aioredis.Redis:
        """The client of the one server (or Sentinel primary)."""
        if self.one_server is None:
            raise RedisError("no one-server client on a Redis Cluster")
        return self.one_server


def gateway_of(conn: HTTPConnection) -> Gateway:
    """The `Gateway` of the app serving ``conn`` (set by the app's lifespan)."""
    gw: Gateway = conn.app.state.gateway
    return gw


GatewayDep = Annotated[Gateway, Depends(gateway_of)]
"""A route parameter ``gw: GatewayDep`` receives the app's `Gateway`."""
