"""What the app's lifespan opens on a Cluster instead of one client: the pooled clients of
the primaries, the per-node subscriptions and the notices (docs/CLUSTER.md "The gateway
on a Cluster")."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.cluster.bar_feed import ClusterBarFeed
from gateway.cluster.clients import ClusterClients
from gateway.cluster.feed import ClusterPriceFeed
from gateway.cluster.hub import ClusterHub
from gateway.cluster.notices import ClusterNotices
from gateway.stats import Stats
from shared.errors import SettingsError
from shared.redisio import POOLED, SERVICE, cluster_topology
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClusterParts:
    clients: ClusterClients
    notices: ClusterNotices
    price_feed: ClusterPriceFeed
    bar_feed: ClusterBarFeed


@asynccontextmanager
async def cluster_parts(settings: Settings, hub: ClusterHub,
                        stats: Stats) -> AsyncIterator[ClusterParts]:
    """The gateway's Cluster clients and feeds, closed at exit. Refuses to start when the
    Cluster's ``NS:{meta}:config`` names another number of partitions."""
    clients = ClusterClients(cluster_topology(settings, POOLED), settings.layout)
    subscriptions = cluster_topology(settings, SERVICE)  # redis-py's retries off
    try:
        await check_partitions(clients, settings.partitions)
        notices = ClusterNotices(clients, hub)
        bars = ClusterBarFeed(clients, hub)
        feed = ClusterPriceFeed(settings.layout, hub, stats, subscriptions,
                                on_control=notices.watchlist_changed, on_bars=bars.on_close,
                                publisher=clients)
        yield ClusterParts(clients, notices, feed, bars)
    finally:
        await subscriptions.aclose()
        await clients.aclose()


async def check_partitions(clients: ClusterClients, partitions: int) -> None:
    """`SettingsError` when the producers wrote another P; nothing when no producer wrote
    one yet or the Cluster does not answer (the subscription retries on its own)."""
    config = clients.layout.meta.config

    async def read(client: aioredis.Redis) -> Any:
        return await client.hget(config, "partitions")

    try:
        raw = await clients.meta(read)
    except (RedisError, OSError) as e:
        log.warning("cannot read %s yet (%s): the partitions are not checked", config, e)
        return
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if text is not None and text != str(partitions):
        raise SettingsError(
            f"PRICEFEED_PARTITIONS={partitions} but the Cluster's {config} says "
            f"{text[:20]}: every producer and gateway of a namespace needs the same number "
            "(docs/CLUSTER.md)")


async def check_before_start(settings: Settings) -> None:
    """`check_partitions` with clients of its own (``pricefeed gateway`` runs it before
    the server starts, so a wrong P is one line and exit status 2, not a traceback)."""
    clients = ClusterClients(cluster_topology(settings, SERVICE), settings.layout)
    try:
        await check_partitions(clients, settings.partitions)
    finally:
        await clients.aclose()
