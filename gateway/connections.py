"""Redis clients of the gateway, built by `shared.redisio.connect`: a bounded pool for
reads and writes (`POOLED`), and a client with redis-py's retries off for each pub/sub
subscription (`SERVICE`: its own silent reconnect would resubscribe without the hub
knowing ticks were lost, see `gateway.price_feed`)."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from shared.redisio import POOLED, SERVICE, connect
from shared.settings import Settings

RedisFactory = Callable[[bool], aioredis.Redis]
"""Builds a client; the argument is True for the pub/sub subscription's client."""


def redis_factory(settings: Settings) -> RedisFactory:
    """Real clients for ``settings.redis_url``."""

    def make(for_subscription: bool) -> aioredis.Redis:
        return connect(settings, SERVICE if for_subscription else POOLED)

    return make
