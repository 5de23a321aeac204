"""The subscription and background tasks recover on their own."""

from __future__ import annotations

import asyncio

import httpx
import pytest

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
async def test_a_killed_subscription_comes_back_and_every_client_gets_a_snapshot(
    settings, aredis, namespace
):
    producer = ContractWriter(aredis, Keys(namespace))
    cached = await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with served(settings) as (url, app), httpx.AsyncClient(base_url=url) as client:
        async with (open_stream(client, "/api/stream/prices") as a,
                    open_stream(client, "/api/stream/prices", params={"tickers": "MSFT"}) as b):
            await a.event()
            await b.event()
            await aredis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            resent_a, resent_b = await a.event(), await b.event()
            assert resent_a.json() == {t: u.to_dict() for t, u in cached.items()}
            assert resent_b.json() == {"MSFT": cached["MSFT"].to_dict()}
            assert app.state.gateway.stats.redis_reconnects == 1
            later = await producer.atick({"AAPL": 191.0})
            assert (await a.event()).json() == {"AAPL": later["AAPL"].to_dict()}
