"""Redis clients of the gateway: a bounded pool for reads/writes, a raw one for pub/sub.

The subscription's client has redis-py's retries off: its own silent reconnect would
resubscribe without the hub knowing ticks were lost (see `gateway.subscriber`).

The pool's connections retry a command ONCE on a fresh connection when theirs is found
dead (a Redis restart or failover, ``CLIENT KILL``, Redis's idle ``timeout``): without
it every dead pooled connection failed one request with a 503 while Redis was healthy
(docs/RELIABILITY.md). Only connection errors are retried, not timeouts: a Redis that
hangs must not cost twice the socket timeout. A connection idle longer than
`HEALTH_CHECK_S` is PINGed before use.
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.settings import Settings

# Snapshot reads of thousands of clients connecting at once share this many connections
# instead of opening one each.
POOL_SIZE = 32
HEALTH_CHECK_S = 10

RedisFactory = Callable[[bool], aioredis.Redis]
"""Builds a client; the argument is True for the pub/sub subscription's client."""


def redis_factory(settings: Settings) -> RedisFactory:
    """Real clients for ``settings.redis_url``."""

    def make(for_subscription: bool) -> aioredis.Redis:
        if for_subscription:
            return aioredis.from_url(
                settings.redis_url, retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=2.0, socket_timeout=5.0, **settings.redis_options,
            )
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=POOL_SIZE, timeout=5.0,
            socket_connect_timeout=2.0, socket_timeout=5.0, **settings.redis_options,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            retry_on_error=[RedisConnectionError], health_check_interval=HEALTH_CHECK_S,
        )
        return aioredis.Redis.from_pool(pool)  # the client owns and closes the pool

    return make
