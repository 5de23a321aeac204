"""One producer at a time: a lease in Redis, renewed every second (issue 2, point 8).

``NS:producer`` holds the live producer's id with a TTL of `LEASE_TTL_MS`; ``SET NX PX``
takes it, a compare-and-pexpire script renews it only while it is still ours, and every
tick's write checks the owner inside the same script (see `producer.publisher`), so a
producer that lost its lease can never publish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn

import orjson
import redis.asyncio as aioredis

from shared.errors import PricefeedError
from shared.keys import Keys

log = logging.getLogger(__name__)

LEASE_TTL_MS: Final[int] = 3000
RENEW_INTERVAL_S: Final[float] = 1.0

# KEYS: lease, status. ARGV: id, ttl_ms, status JSON. 1 when renewed, 0 when not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return 1
"""
# KEYS: lease, status. ARGV: id. Deletes both only while the lease is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


class LeaseLost(PricefeedError):
    """Another producer holds the lease now (or it expired): stop publishing."""


def new_owner_id() -> str:
    """An id unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """The producer lease under ``keys.producer`` for ``owner_id``."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, owner_id: str, ttl_ms: int = LEASE_TTL_MS
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.owner_id = owner_id
        self.ttl_ms = ttl_ms
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or we already do)."""
        if await self.redis.set(self.keys.producer, self.owner_id, nx=True, px=self.ttl_ms):
            return True
        return await self.redis.get(self.keys.producer) == self.owner_id.encode()

    async def renew(self, status: Mapping[str, Any]) -> bool:
        """Extend the lease and write the status beside it; False when it is not ours."""
        keys = [self.keys.producer, self.keys.producer_status]
        args: list[str | int | bytes] = [self.owner_id, self.ttl_ms, orjson.dumps(dict(status))]
        return bool(await self._renew(keys=keys, args=args))

    async def release(self) -> bool:
        """Give the lease up at once so a standby takes over without waiting for the TTL."""
        keys = [self.keys.producer, self.keys.producer_status]
        return bool(await self._release(keys=keys, args=[self.owner_id]))

    async def keep(self, status: Callable[[], Mapping[str, Any]]) -> NoReturn:
        """Renew every `RENEW_INTERVAL_S` until the lease is lost (raises `LeaseLost`)."""
        while True:
            if not await self.renew({**status(), "id": self.owner_id, "updated": time.time()}):
                raise LeaseLost(f"lease {self.keys.producer} is no longer held by {self.owner_id}")
            await asyncio.sleep(RENEW_INTERVAL_S)
