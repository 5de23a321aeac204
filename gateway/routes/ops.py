"""Operations: liveness, readiness (Redis + producer heartbeat), Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from gateway.cluster.feed import ClusterPriceFeed
from gateway.cluster.ready import cluster_ready
from gateway.deps import GatewayDep
from gateway.price_feed import FLAP_WINDOW_S
from shared.models import OUT_OF_MEMORY_STATE
from shared.status import SOURCE_DOWN, problem
from shared.version import VERSION

router = APIRouter()
READY_TIMEOUT_S = 1.0


@router.get("/api/health")
async def health() -> dict[str, str]:
    """200 while the process serves, with the version it runs."""
    return {"status": "ok", "version": VERSION}


# HEAD too, for uptime checks; a route of its own keeps the OpenAPI operation ids unique.
router.add_api_route("/api/health", health, methods=["HEAD"], include_in_schema=False)


@router.get("/api/ready", response_model=None)
async def ready(gw: GatewayDep) -> JSONResponse:
    """200 when Redis answers, the producer's heartbeat is fresh and its ticks land, its
    price source produces (a closed market counts: it is quiet, not broken) and prices are
    subscribed (and the subscription is not dropping again and again)."""
    if gw.cluster is not None:
        assert isinstance(gw.price_feed, ClusterPriceFeed)
        return await cluster_ready(gw.cluster, gw.price_feed, _producer_status)
    keys = gw.settings.keys
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            async with gw.redis.pipeline(transaction=False) as pipe:
                pipe.ping()
                pipe.exists(keys.producer)
                pipe.get(keys.producer_status)
                _, heartbeat, raw_status = await pipe.execute()
    except (RedisError, OSError, TimeoutError) as e:
        return _not_ready(f"redis unavailable: {type(e).__name__}", None)
    status = _producer_status(raw_status)
    why = problem(status) if isinstance(status, dict) else None
    if not heartbeat:
        if why is not None:  # the lease holder's source has produced no tick yet
            return _not_ready(f"{SOURCE_DOWN}: {why}", status)
        return _not_ready("producer heartbeat missing (no live producer)", status)
    if isinstance(status, dict) and status.get("state") == OUT_OF_MEMORY_STATE:
        return _not_ready("Redis is out of memory: the producer's ticks are refused", status)
    drops = gw.price_feed.flapping
    if drops:
        return _not_ready(f"subscription to the prices channel keeps dropping ({drops} losses "
                          f"in {FLAP_WINDOW_S:.0f} s with no tick delivered)", status)
    if not gw.price_feed.connected:
        return _not_ready("subscription to the prices channel not established yet", status)
    if why is not None:
        return _not_ready(f"{SOURCE_DOWN}: {why}", status)
    body: dict[str, Any] = {"status": "ready"}
    if status is not None:
        body["producer"] = status
    return JSONResponse(body)


def _not_ready(reason: str, producer: Any) -> JSONResponse:
    body: dict[str, Any] = {"status": "not ready", "reason": reason}
    if producer is not None:
        body["producer"] = producer
    return JSONResponse(body, status_code=503)


def _producer_status(raw: bytes | None) -> Any:
    """The producer's status as the public may see it: without its ``id``, which names
    its host and pid (operators read it from ``NS:producer`` in Redis)."""
    if raw is None:
        return None
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"unparsable": True}
    if isinstance(status, dict):
        status.pop("id", None)
    return status


@router.get("/metrics", response_model=None)
async def metrics(gw: GatewayDep) -> Response:
    """Prometheus text exposition of this process's counters and gauges."""
    return Response(generate_latest(gw.registry), media_type=CONTENT_TYPE_LATEST)
