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
from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from gateway.verifier import Verifier

from gateway.hub import Hub
from gateway.notices import Notices
from gateway.price_feed import PriceFeed
from gateway.stats import Stats
from gateway.stream.liveness import SendWatchdog
from shared.settings import Settings


@dataclass(slots=True)
class Gateway:
    """One per app: settings, the Redis client for reads and writes, the hub, the counters."""

    settings: Settings
    redis: aioredis.Redis
    hub: Hub
    stats: Stats
    price_feed: PriceFeed
    registry: CollectorRegistry
    watchdog: SendWatchdog
    notices: Notices
    verifier: Verifier | None = None  # None: reads are open (PRICEFEED_READ_AUTH=none)


def gateway_of(conn: HTTPConnection) -> Gateway:
    """The `Gateway` of the app serving ``conn`` (set by the app's lifespan)."""
    gw: Gateway = conn.app.state.gateway
    return gw


GatewayDep = Annotated[Gateway, Depends(gateway_of)]
"""A route parameter ``gw: GatewayDep`` receives the app's `Gateway`."""
