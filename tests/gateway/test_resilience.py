"""The subscription and background tasks recover on their own."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis.asyncio as aioredis

from bench.contract_publisher import ContractWriter
from gateway.hub import Hub
from gateway.price_feed import PriceFeed
from gateway.stats import Stats
from shared.keys import Keys
from shared.redisio import StaleSubscription
from shared.settings import Settings
from shared.tasks import Supervisor
from tests.helpers.gateway import served
from tests.helpers.poll import wait_until
from tests.helpers.sse import open_stream


class SilentPubSub:
    """A subscription whose connection died without an error once Redis confirmed it:
    nothing more ever arrives."""

    def __init__(self, channel: str) -> None:
        self.pings = 0
        self.confirmation: dict[str, object] | None = {
            "type": "subscribe", "channel": channel.encode(), "data": 1}

    async def subscribe(self, *channels: str) -> None:
        pass

    async def get_message(self, timeout: float) -> dict[str, object] | None:  # noqa: ASYNC109 - redis-py signature
        if self.confirmation is not None:
            message, self.confirmation = self.confirmation, None
            return message
        await asyncio.sleep(timeout)
        return None

    async def ping(self) -> None:
        self.pings += 1

    async def aclose(self) -> None:
        pass


async def test_a_silent_subscription_is_noticed_by_the_ping_probe(fake_redis):
    stats = Stats()
    settings = Settings()
    pubsub = SilentPubSub(settings.keys.prices)
    client = fake_redis
    client.pubsub = lambda **_: pubsub  # type: ignore[method-assign,assignment,return-value]
    subscriber = PriceFeed(
        settings, Hub(stats), stats, connect=lambda: client,
        probe_after_s=0.2, probe_timeout_s=0.2,
    )
    with pytest.raises(StaleSubscription):
        async with asyncio.timeout(5):
            await subscriber._session(after_failure=False)
    assert pubsub.pings == 1


async def test_a_background_task_that_dies_is_restarted():
    runs = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    async with Supervisor(restart_cap_s=0.05) as supervisor:
        supervisor.start("flaky", flaky)
        await wait_until(lambda: len(runs) == 3, what="two restarts")
        assert supervisor.restarts == 2
        assert supervisor.running == 1
    assert supervisor.running == 0


@pytest.mark.integration
async def test_a_killed_subscription_comes_back_and_clients_get_each_update_once(
    settings, aredis, namespace
):
    producer = ContractWriter(aredis, Keys(namespace))
    cached = await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with served(settings) as (url, app), httpx.AsyncClient(base_url=url) as client:
        async with (open_stream(client, "/api/stream/prices") as a,
                    open_stream(client, "/api/stream/prices", params={"tickers": "MSFT"}) as b):
            assert (await a.event()).json() == {t: u.to_dict() for t, u in cached.items()}
            await b.event()
            await aredis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            # Landed while the subscription is down or just back: delivered once either
            # way, by the catch-up or live; what the clients hold is not sent again.
            missed = await producer.atick({"AAPL": 191.0})
            assert (await a.event()).json() == {"AAPL": missed["AAPL"].to_dict()}
            await wait_until(lambda: app.state.gateway.stats.redis_reconnects == 1,
                             what="the resubscription")
            later = await producer.atick({"MSFT": 421.0})
            assert (await a.event()).json() == {"MSFT": later["MSFT"].to_dict()}
            assert (await b.event()).json() == {"MSFT": later["MSFT"].to_dict()}


@pytest.mark.integration
async def test_a_subscription_left_on_a_node_without_the_traffic_is_caught_by_the_delivery_probe(
    redis_server_factory, namespace
):
    # The subscription's first session lands on `stale`, a node that answers PING but no
    # longer gets what is published (a demoted primary, a reused address); publishes, the
    # probe's included, go to `live`. Only a probe that must come back can tell.
    stale, live = redis_server_factory(), redis_server_factory()
    settings = Settings(redis_url=live.url, namespace=namespace)
    publisher = aioredis.Redis.from_url(live.url)
    sessions: list[str] = []

    def connect() -> aioredis.Redis:
        sessions.append("stale" if not sessions else "live")
        return aioredis.Redis.from_url(stale.url if len(sessions) == 1 else live.url)

    stats = Stats()
    hub = Hub(stats)
    feed = PriceFeed(settings, hub, stats, connect, probe_after_s=0.3, probe_timeout_s=0.5,
                     publisher=publisher)
    writer = ContractWriter(publisher, settings.keys)
    await writer.atick({"AAPL": 190.0})
    async with Supervisor() as supervisor:
        supervisor.start("price-feed", feed.run)
        await wait_until(lambda: feed.connected, what="the first (stale) session")
        assert await aioredis.Redis.from_url(stale.url).ping()  # a PING would pass
        await wait_until(lambda: not feed.connected, what="the probe not coming back")
        assert stats.redis_reconnects == 0
        await wait_until(lambda: feed.connected and sessions[-1] == "live",
                         what="a new session on the live node")
        assert stats.redis_reconnects == 1
        tick = await writer.atick({"AAPL": 191.0})
        await wait_until(lambda: hub.pos >= tick["AAPL"].seq, what="a tick delivered")
    await publisher.aclose()


@pytest.mark.integration
async def test_probes_on_a_quiet_healthy_subscription_come_back(redis_server_factory, namespace):
    server = redis_server_factory()
    settings = Settings(redis_url=server.url, namespace=namespace)
    publisher = aioredis.Redis.from_url(server.url)
    watcher = aioredis.Redis.from_url(server.url).pubsub()
    await watcher.psubscribe(settings.keys.probe("*"))
    stats = Stats()
    feed = PriceFeed(settings, Hub(stats), stats, lambda: aioredis.Redis.from_url(server.url),
                     probe_after_s=0.1, probe_timeout_s=1.0, publisher=publisher)
    async with Supervisor() as supervisor:
        supervisor.start("price-feed", feed.run)
        await wait_until(lambda: feed.connected, what="the subscription")
        probes = 0
        async with asyncio.timeout(10):
            while probes < 5:
                message = await watcher.get_message(timeout=1.0)
                probes += message is not None and message["type"] == "pmessage"
        assert feed.connected and stats.redis_reconnects == 0 and not feed.flapping
    await watcher.aclose()
    await publisher.aclose()
