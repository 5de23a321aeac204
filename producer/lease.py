"""One producer at a time: a lease in Redis, renewed every second (docs/RELIABILITY.md).

``NS:producer:lease`` holds the writing producer's id with a TTL of `LEASE_TTL_MS`;
``SET NX PX`` takes it, a compare-and-pexpire script renews it only while it is still
ours, and every tick's write checks the owner inside the same script (see
`producer.publisher`), so a producer that lost its lease can never publish.

The heartbeat ``NS:producer`` (what readiness and the compose healthcheck look at) is
written by the same renewal, but only once a tick of the term has landed: holding the
lease is not producing (a Redis that refuses every tick still grants the lease).

The renewal script's first write is the PEXPIRE, which Redis allows under ``maxmemory``
with ``noeviction``; a script that has written may go on writing, so the heartbeat and the
status (a few hundred bytes, replaced in place) are still written when Redis is out of
memory, and the status can say so (docs/RELIABILITY.md, "Redis faults, consistency and
the watchlist").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn

import orjson
import redis.asyncio as aioredis

from producer.scripts import Script
from shared.errors import PricefeedError
from shared.keys import Keys

log = logging.getLogger(__name__)

LEASE_TTL_MS: Final[int] = 3000
RENEW_INTERVAL_S: Final[float] = 1.0

# KEYS: lease, status, heartbeat. ARGV: id, ttl_ms, status JSON, 1 to write the heartbeat.
# 1 when renewed, 0 when not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
if ARGV[4] == '1' then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2]) end
return 1
"""
# KEYS: lease, status, heartbeat. ARGV: id. Deletes all three only while the lease is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""


class LeaseLost(PricefeedError):
    """Another producer holds the lease now (or it expired): stop publishing."""


def new_owner_id() -> str:
    """An id unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """The producer lease under ``keys.lease`` for ``owner_id``."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, owner_id: str, ttl_ms: int = LEASE_TTL_MS
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.owner_id = owner_id
        self.ttl_ms = ttl_ms
        self._renew = Script(redis, _RENEW)
        self._release = Script(redis, _RELEASE)
        self._keys = [keys.lease, keys.producer_status, keys.producer]

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or we already do)."""
        if await self.redis.set(self.keys.lease, self.owner_id, nx=True, px=self.ttl_ms):
            return True
        return await self.redis.get(self.keys.lease) == self.owner_id.encode()

    async def renew(self, status: Mapping[str, Any], heartbeat: bool = True) -> bool:
        """Extend the lease and write the status beside it, and the heartbeat when
        ``heartbeat``; False when the lease is not ours."""
        args: list[str | int | bytes] = [
            self.owner_id, self.ttl_ms, orjson.dumps(dict(status)), int(heartbeat),
        ]
        return bool(await self._renew(keys=self._keys, args=args))

    async def release(self) -> bool:
        """Give the lease up at once so a standby takes over without waiting for the TTL."""
        return bool(await self._release(keys=self._keys, args=[self.owner_id]))

    async def keep(
        self, status: Callable[[], Mapping[str, Any]], producing: asyncio.Event
    ) -> NoReturn:
        """Renew every `RENEW_INTERVAL_S` until the lease is lost (raises `LeaseLost`).

        The heartbeat is written from the first renewal after ``producing`` is set (at
        once when it is set: readiness need not wait a renewal interval).
        """
        while True:
            beat = producing.is_set()
            fields = {**status(), "id": self.owner_id, "updated": time.time()}
            if not await self.renew(fields, heartbeat=beat):
                raise LeaseLost(f"lease {self.keys.lease} is no longer held by {self.owner_id}")
            if beat:
                await asyncio.sleep(RENEW_INTERVAL_S)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(producing.wait(), RENEW_INTERVAL_S)
