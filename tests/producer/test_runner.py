"""The runner against fakeredis: a term produces; a source that refuses the settings stops
the process with a clear error instead of a retry loop."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

import producer.runner as runner_module
from producer.runner import ProducerRunner, SourceConfigError
from producer.sources.base import MarketDataSource, Quote
from shared.settings import Settings
from tests.helpers.poll import wait_until
from tests.helpers.support import free_port

SETTINGS = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", namespace="run",
                    tickers=("AAPL", "MSFT"), tick_interval_s=0.01)


async def test_a_term_produces_and_stops_cleanly(fake_redis) -> None:
    runner = ProducerRunner(SETTINGS, fake_redis, owner_id="me")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))

    async def produced() -> bool:  # the heartbeat follows the first tick that landed
        return bool(await fake_redis.hlen(SETTINGS.keys.latest) == 2
                    and await fake_redis.exists(SETTINGS.keys.producer))

    await wait_until(produced, 5, what="a tick and the heartbeat")
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


class SilentSource(MarketDataSource):
    """A source that produces only when told to (like a feed before its first quote)."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.tickers: list[str] = []

    async def start(self, tickers, last_prices) -> None:
        self.tickers = list(tickers)

    async def stop(self) -> None:
        pass

    async def add_ticker(self, ticker, last_price=None) -> None:
        self.tickers.append(ticker)

    async def remove_ticker(self, ticker) -> None:
        self.tickers.remove(ticker)

    def get_tickers(self) -> list[str]:
        return list(self.tickers)

    async def emit(self) -> None:
        await self.sink({t: Quote(100.0, time.time()) for t in self.tickers})


async def test_no_heartbeat_until_the_first_tick_has_landed(fake_redis, monkeypatch) -> None:
    sources: list[SilentSource] = []
    monkeypatch.setattr(runner_module, "create_source",
                        lambda settings, sink: sources.append(SilentSource(sink)) or sources[-1])
    runner = ProducerRunner(SETTINGS, fake_redis, owner_id="me")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_until(lambda: fake_redis.exists(SETTINGS.keys.producer_status), 5,
                         what="the status")
        assert await fake_redis.get(SETTINGS.keys.lease) == b"me"  # the lease is held...
        assert await fake_redis.exists(SETTINGS.keys.producer) == 0  # ...but no heartbeat
        await sources[0].emit()
        # Written at once, not at the next renewal a second later.
        await wait_until(lambda: fake_redis.exists(SETTINGS.keys.producer), 2,
                         what="the heartbeat")
        assert await fake_redis.get(SETTINGS.keys.producer) == b"me"
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)


async def test_a_clean_stop_writes_the_forming_bars_of_the_last_tick(fake_redis) -> None:
    # `race` used to cancel the publisher's failure future, and flush_bars took that for a
    # failed term: the forming bars in Redis stayed at the last tick that closed a bar.
    runner = ProducerRunner(SETTINGS, fake_redis, owner_id="me")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    async def newest_seq() -> int:
        cached = await fake_redis.hgetall(SETTINGS.keys.latest)
        return max((orjson.loads(raw)["seq"] for raw in cached.values()), default=0)

    async def ticked_past_the_stored_bars() -> bool:  # the stop comes between bar writes
        stored = await fake_redis.get(SETTINGS.keys.forming_seq)
        return stored is not None and await newest_seq() > int(stored) + 2

    await wait_until(ticked_past_the_stored_bars, 5, what="ticks after the stored bars")
    stop.set()
    await asyncio.wait_for(task, 2)
    assert int(await fake_redis.get(SETTINGS.keys.forming_seq)) == await newest_seq()
