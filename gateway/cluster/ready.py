"""``/api/ready`` on a Cluster: every partition subscribed, and which partitions have a live
producer (docs/CLUSTER.md "The gateway on a Cluster")."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from gateway.cluster.clients import ClusterClients
from gateway.cluster.feed import ClusterPriceFeed
from gateway.cluster.reads import read_heartbeat
from gateway.price_feed import FLAP_WINDOW_S
from shared.keys import Keys
from shared.models import OUT_OF_MEMORY_STATE
from shared.status import SOURCE_DOWN, problem

READY_TIMEOUT_S = 1.0


async def _heartbeats(clients: ClusterClients) -> list[tuple[bool, bytes | None] | None]:
    """Every partition's heartbeat and raw status; None for one whose node cannot be read
    now (a failover under way)."""
    async def one(keys: Keys) -> tuple[bool, bytes | None] | None:
        try:
            return await clients.call(keys, lambda client: read_heartbeat(client, keys))
        except (RedisError, OSError):
            return None

    return list(await asyncio.gather(*(one(k) for k in clients.layout.all())))


async def cluster_ready(clients: ClusterClients, feed: ClusterPriceFeed,
                        status_of: Any) -> JSONResponse:
    """200 when every partition is subscribed and at least one has a fresh producer
    heartbeat. The body names the partitions with one (``producers.fresh``), those
    without (``producers.missing``: no producer, or no ticker in them yet) and those whose
    node cannot be read now (``producers.unknown``, during a failover)."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            found = await _heartbeats(clients)
    except (RedisError, OSError, TimeoutError) as e:  # no slot map, or too slow
        return _answer(f"redis unavailable: {type(e).__name__}", None, None)
    if all(f is None for f in found):
        return _answer("redis unavailable: no partition could be read", None, None)
    producers: dict[str, list[int]] = {"fresh": [], "missing": [], "unknown": []}
    for index, one in enumerate(found):
        producers["unknown" if one is None else "fresh" if one[0] else "missing"].append(index)
    read = [f for f in found if f is not None]
    raw = next((r for beat, r in read if beat and r is not None),
               next((r for _, r in read if r is not None), None))
    status = status_of(raw)
    why = problem(status) if isinstance(status, dict) else None
    missing = feed.missing()
    if missing or not feed.connected:
        shown = ",".join(map(str, missing)) or "control"
        return _answer(f"partitions not subscribed yet: {shown}", status, producers)
    drops = feed.flapping
    if drops:
        return _answer(f"subscription to a Cluster node keeps dropping ({drops} losses in "
                       f"{FLAP_WINDOW_S:.0f} s with no tick delivered)", status, producers)
    if not producers["fresh"]:
        reason = f"{SOURCE_DOWN}: {why}" if why else "producer heartbeat missing (no live producer)"
        return _answer(reason, status, producers)
    if isinstance(status, dict) and status.get("state") == OUT_OF_MEMORY_STATE:
        return _answer("Redis is out of memory: the producer's ticks are refused", status,
                       producers)
    if why is not None:
        return _answer(f"{SOURCE_DOWN}: {why}", status, producers)
    return _answer(None, status, producers)


def _answer(reason: str | None, status: Any, producers: dict[str, list[int]] | None
            ) -> JSONResponse:
    body: dict[str, Any] = ({"status": "ready"} if reason is None
                            else {"status": "not ready", "reason": reason})
    if status is not None:
        body["producer"] = status
    if producers is not None:
        body["producers"] = producers
    return JSONResponse(body, status_code=200 if reason is None else 503)
