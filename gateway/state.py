"""What the app's routes share, built by the app factory and opened by its lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from gateway.verifier import Verifier

from gateway.hub import Hub
from gateway.notices import Notices
from gateway.sse import SendWatchdog
from gateway.stats import Stats
from gateway.subscriber import Subscriber
from shared.settings import Settings


@dataclass(slots=True)
class Gateway:
    """One per app: settings, the Redis client for reads and writes, the hub, the counters."""

    settings: Settings
    redis: aioredis.Redis
    hub: Hub
    stats: Stats
    subscriber: Subscriber
    registry: CollectorRegistry
    watchdog: SendWatchdog
    notices: Notices
    verifier: Verifier | None = None  # None: reads are open (PRICEFEED_READ_AUTH=none)
