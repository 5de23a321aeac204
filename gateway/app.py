"""The app factory: routes, limits, CORS, and a lifespan that opens Redis and the hub.

Nothing connects at import or in `create_app`; the lifespan opens the Redis client, the
process's ONE pub/sub subscription (a supervised background task) and hands the hub to
the routes. On shutdown every stream is ended first, so the server can exit at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import redis_outage
from gateway.access import Refused, refused_handler
from gateway.bar_feed import BarFeed
from gateway.cluster.clients import ClusterClients
from gateway.cluster.feed import ClusterPriceFeed
from gateway.cluster.hub import ClusterHub
from gateway.cluster.wiring import cluster_parts
from gateway.connections import RedisFactory, redis_factory
from gateway.deps import Gateway
from gateway.headers import HostCheck, SecurityHeaders
from gateway.hub import Hub
from gateway.limits import BodyLimit
from gateway.notices import Notices
from gateway.price_feed import PriceFeed
from gateway.routes import bars, ops, prices, static, watchlist
from gateway.stats import Stats, registry_for
from gateway.stream import endpoint as stream
from gateway.stream.liveness import SendWatchdog, ping_forever, quiet_uvicorn_drops
from gateway.stream.shutdown import StreamShutdown
from shared.settings import Settings
from shared.tasks import Supervisor

log = logging.getLogger(__name__)


def open_fds() -> float:
    """File descriptors this process holds (NaN where /proc is not available)."""
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return math.nan


def create_app(settings: Settings, connect: RedisFactory | None = None) -> FastAPI:
    """A gateway app for ``settings``; connections open when its lifespan starts.

    ``connect`` builds the Redis clients (tests pass fakeredis); real ones by default.
    """
    stats = Stats()
    hub = ClusterHub(stats, settings.partitions) if settings.clustered else Hub(stats)
    shutdown = StreamShutdown(hub)
    make_redis = connect or redis_factory(settings)
    verifier = None
    if settings.read_auth == "jwt":
        from gateway.verifier import Verifier  # PyJWT: loaded only when it is used

        verifier = Verifier(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        quiet_uvicorn_drops()
        if isinstance(hub, ClusterHub):
            async with cluster_parts(settings, hub, stats) as parts:
                async with serving(app, None, parts.notices, parts.price_feed, parts.bar_feed,
                                   parts.clients):
                    yield
            return
        redis = make_redis(False)
        notices = Notices(redis, settings.keys, hub)
        price_feed = PriceFeed(settings, hub, stats, lambda: make_redis(True),
                               on_control=notices.watchlist_changed, publisher=redis)
        bar_feed = BarFeed(settings.keys, hub, lambda: make_redis(True), redis)
        try:
            async with serving(app, redis, notices, price_feed, bar_feed, None):
                yield
        finally:
            await redis.aclose()

    @asynccontextmanager
    async def serving(app: FastAPI, redis: aioredis.Redis | None, notices: Notices,
                      price_feed: PriceFeed | ClusterPriceFeed, bar_feed: BarFeed,
                      cluster: ClusterClients | None) -> AsyncIterator[None]:
        """The background tasks and the routes' `Gateway`, one server or Cluster."""
        watchdog = SendWatchdog(settings.send_timeout_s)
        async with Supervisor() as supervisor:
            stats.gauges.update({
                "open_streams": lambda: len(hub.clients),
                "hub_subscriptions": lambda: float(price_feed.connected),
                "background_tasks": lambda: supervisor.running,
                "background_task_restarts": lambda: supervisor.restarts,
                # Leak detectors (docs/RELIABILITY.md, churn): every task and descriptor of
                # the process.
                "asyncio_tasks": lambda: len(asyncio.all_tasks()),
                "open_fds": open_fds,
            })
            app.state.gateway = Gateway(settings, redis, hub, stats, price_feed,
                                        app.state.registry, watchdog, notices,
                                        verifier, cluster)
            supervisor.start("price-feed", price_feed.run)
            supervisor.start("send-watchdog", watchdog.run)
            supervisor.start("bar-feed", bar_feed.run)
            supervisor.start("pinger", lambda: ping_forever(hub, settings.ping_interval_s))
            supervisor.start("exit-watcher", shutdown.watch_server_exit)
            supervisor.start("source-notices", notices.follow_source)
            supervisor.start("watchlist-notices", notices.follow_watchlist)
            log.info("gateway started (namespace %s%s)", settings.namespace,
                     f", a Cluster of {settings.partitions} partitions" if cluster else "")
            try:
                yield
            finally:
                shutdown.begin()

    app = GatewayApp(title="pricefeed gateway", lifespan=lifespan)
    app.state.registry = registry_for(stats)
    app.state.hub = hub
    app.state.stream_shutdown = shutdown
    app.router.routes.append(stream.route)
    for module in (prices, bars, watchlist, ops, static):
        app.include_router(module.router)
    redis_outage.install(app)
    app.add_exception_handler(Refused, refused_handler)
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders)  # the stream adds them itself (gateway/stream/response.py)
    cors = {"allow_origins": list(settings.cors_origins),
            "allow_methods": ["GET", "POST", "DELETE"],
            "allow_headers": ["Authorization", "Content-Type", "Last-Event-ID"]}
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, **cors)  # type: ignore[arg-type]
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)  # outermost
    # A stream gets the same Host check and CORS, and nothing else of the stack.
    entry: ASGIApp = stream.StreamEndpoint()
    if settings.cors_origins:
        entry = CORSMiddleware(entry, **cors)  # type: ignore[arg-type]
    app.stream_app = HostCheck(entry, allowed=settings.allowed_hosts)
    return app


class GatewayApp(FastAPI):
    """FastAPI, but a stream request goes straight to `stream_app` (the Host check, CORS
    and the stream endpoint) instead of through FastAPI's own ASGI stack: Starlette,
    ``ServerErrorMiddleware`` and its send wrapper, fastapi's telemetry and body-limit
    middleware, the router. A stream lives for hours and every event resumes each of those
    frames: about 2 µs of CPU per event and 1.5 KB per idle connection
    (docs/PERFORMANCE.md, "Memory per idle connection" and the gateway profile)."""

    stream_app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.stream_app is not None and scope["type"] == "http"
                and scope["path"] == stream.PATH and scope["method"] in stream.METHODS):
            scope["app"] = self  # as Starlette sets it: routes find the app's state there
            await self.stream_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
