"""The runner against fakeredis: a term produces; a source that refuses the settings stops
the process with a clear error instead of a retry loop."""

from __future__ import annotations

import asyncio

import pytest

import producer.runner as runner_module
from producer.runner import ProducerRunner, SourceConfigError
from shared.settings import Settings
from tests.support import free_port

SETTINGS = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", namespace="run",
                    tickers=("AAPL", "MSFT"), tick_interval_s=0.01)


async def test_a_term_produces_and_stops_cleanly(fake_redis) -> None:
    runner = ProducerRunner(SETTINGS, fake_redis, owner_id="me")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    for _ in range(200):
        if await fake_redis.hlen(SETTINGS.keys.latest) == 2:
            break
        await asyncio.sleep(0.01)
    assert await fake_redis.get(SETTINGS.keys.producer) == b"me"
    stop.set()
    await asyncio.wait_for(task, 2)
    assert await fake_redis.get(SETTINGS.keys.producer) is None  # released


async def test_a_source_refusing_the_settings_is_fatal(fake_redis, monkeypatch) -> None:
    def refuse(settings, sink):
        raise ValueError("PRICEFEED_MASSIVE_MODE is not supported here")

    monkeypatch.setattr(runner_module, "create_source", refuse)
    runner = ProducerRunner(SETTINGS, fake_redis, owner_id="me")
    with pytest.raises(SourceConfigError, match="MASSIVE_MODE"):
        await asyncio.wait_for(runner.run(asyncio.Event()), 2)
