"""Fixtures of the gateway suite."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from bench.contract_publisher import ContractWriter
from gateway.app import create_app
from shared.keys import Keys
from shared.settings import Settings
from tests.helpers.poll import wait_until

AppClient = Callable[..., contextlib.AbstractAsyncContextManager[tuple[httpx.AsyncClient, FastAPI]]]


@pytest.fixture
def fake_settings(namespace: str) -> Settings:
    return Settings(redis_url="redis://fake:6379/0", namespace=namespace)


@pytest.fixture
def api(fake_server: fakeredis.FakeServer, fake_settings: Settings) -> AppClient:
    """An app on fakeredis under its lifespan, and an httpx client speaking ASGI to it."""

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
        settings = Settings(**{**_fields(fake_settings), **overrides})
        app = create_app(settings, lambda _sub: fakeredis.FakeAsyncRedis(server=fake_server))
        async with app.router.lifespan_context(app):
            await wait_until(lambda: app.state.gateway.price_feed.connected, what="subscription")
            transport = httpx.ASGITransport(app=app)
            base = "http://localhost"  # a Host the default allowlist accepts
            async with httpx.AsyncClient(transport=transport, base_url=base) as client:
                yield client, app

    return make


@pytest.fixture
def fake_producer(fake_redis: aioredis.Redis, namespace: str) -> ContractWriter:
    """The reference writer on the app's fakeredis (`api`)."""
    return ContractWriter(fake_redis, Keys(namespace))


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}
