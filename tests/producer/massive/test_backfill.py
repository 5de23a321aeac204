"""The 1 min backfill from Massive's aggregates through the real SDK and a local server:
what it stores, the calls-per-minute budget, 403 and 429 (docs/BARS.md "Backfill")."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis

from producer.lease import LeaseLost
from producer.publisher import BarOptions, Publisher
from producer.runner import ProducerRunner
from producer.sources.massive_backfill import AggsClient, Backfill, CallBudget
from shared.bars import Bar, decode_bar
from shared.keys import Keys
from shared.settings import Secret, Settings
from tests.helpers.massive import (
    API_KEY,
    FakeMassiveHTTP,
    agg,
    forbidden,
    rate_limited,
    snapshot_entry,
)
from tests.helpers.poll import wait_until
from tests.producer.massive.conftest import lines

pytestmark = [pytest.mark.massive, pytest.mark.integration]

TICKERS = ["AAPL", "MSFT", "TSLA"]


@pytest.fixture
async def redis(redis_url: str) -> aioredis.Redis:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def publisher(redis: aioredis.Redis, keys: Keys) -> Publisher:
    await redis.set(keys.lease, "me")  # the lease only: no tick of the term has landed yet
    pub = Publisher(redis, keys, "me", bars=BarOptions({"1s": 3600, "1m": 86_400}, 0.25))
    pub.begin(TICKERS, {})
    await pub.restore_bars(TICKERS)
    return pub


def serve_day(server: FakeMassiveHTTP, now: float) -> int:
    """Five minutes of aggregates per ticker ending with the minute still forming."""
    minute = int(now // 60) * 60
    for i, ticker in enumerate(TICKERS):
        server.aggs[ticker] = [agg((minute - 60 * k) * 1000, 100.0 + i + k) for k in range(5)]
    return minute


def backfill(server: FakeMassiveHTTP, pub: Publisher, budget: CallBudget,
             now: float | None = None) -> Backfill:
    """A backfill whose clock stays at ``now``: a retry's wait cannot carry the run into
    the next minute, which would close the minute that was forming when it was served."""
    clock = time.time if now is None else (lambda: now)
    return Backfill(lambda: AggsClient(API_KEY, server.url), budget, pub.write_backfill,
                    clock=clock)


async def stored(redis: aioredis.Redis, keys: Keys, ticker: str) -> list[Bar]:
    return [decode_bar(raw) for raw in await redis.zrange(keys.bars("1m", ticker), 0, -1)]


async def test_the_last_day_of_closed_minutes_is_stored_with_volume(
        massive_http, redis, namespace) -> None:
    keys = Keys(namespace)
    pub = await publisher(redis, keys)
    now = time.time()
    minute = serve_day(massive_http, now)
    await backfill(massive_http, pub, CallBudget(5), now).run(TICKERS)
    bars = await stored(redis, keys, "AAPL")
    assert [b.t for b in bars] == [minute - 60 * k for k in (4, 3, 2, 1)]  # not the forming
    assert bars[-1] == Bar(minute - 60, 101.0, 101.1, 100.9, 101.05, 17, 1200.0)
    requests = massive_http.seen()
    assert [r.path.split("/")[4] for r in requests] == TICKERS
    first = requests[0].path.split("/")
    assert first[5:8] == ["range", "1", "minute"]
    assert int(first[9]) - int(first[8]) == 86_400_000  # one day, in ms
    await backfill(massive_http, pub, CallBudget(5), now).run(TICKERS)  # again: no doubles
    assert len(await stored(redis, keys, "AAPL")) == 4


async def test_a_producer_whose_lease_is_gone_stores_nothing(massive_http, redis, namespace
                                                             ) -> None:
    keys = Keys(namespace)
    pub = await publisher(redis, keys)
    await redis.set(keys.lease, "another")
    await redis.set(keys.producer, "me")  # a stale heartbeat is no lease
    now = time.time()
    serve_day(massive_http, now)
    with pytest.raises(LeaseLost):
        await backfill(massive_http, pub, CallBudget(5), now).run(["AAPL"])
    assert await redis.exists(keys.bars("1m", "AAPL")) == 0


async def test_minutes_the_producer_already_has_are_left_alone(
        massive_http, redis, namespace) -> None:
    keys = Keys(namespace)
    pub = await publisher(redis, keys)
    now = time.time()
    minute = serve_day(massive_http, now)
    own = b'{"t":%d,"o":5.0,"h":5.0,"l":5.0,"c":5.0,"n":3,"v":null}' % (minute - 60)
    await redis.zadd(keys.bars("1m", "AAPL"), {own: minute - 60})
    await backfill(massive_http, pub, CallBudget(5), now).run(["AAPL"])
    bars = await stored(redis, keys, "AAPL")
    assert len(bars) == 4 and bars[-1].o == 5.0


async def test_the_budget_spaces_the_calls_and_says_so(
        massive_http, redis, namespace, caplog) -> None:
    keys = Keys(namespace)
    pub = await publisher(redis, keys)
    now = time.time()
    serve_day(massive_http, now)
    budget = CallBudget(2, window_s=0.6)  # the free tier's 5 a minute, scaled down
    await backfill(massive_http, pub, budget, now).run(TICKERS)
    at = [r.at for r in massive_http.seen()]
    assert at[2] - at[0] >= 0.55  # the third call waited for the window
    waits = lines(caplog, logging.INFO, "waiting")
    assert len(waits) == 1 and "2 calls a minute" in waits[0] and "2 of 3" in waits[0]


async def test_a_403_stops_the_backfill_with_one_line(
        massive_http, redis, namespace, caplog) -> None:
    keys = Keys(namespace)
    pub = await publisher(redis, keys)
    serve_day(massive_http, time.time())
    massive_http.then(forbidden())
    await backfill(massive_http, pub, CallBudget(5)).run(TICKERS)
    assert len(massive_http.seen()) == 1  # no call after the refusal
    refused = lines(caplog, logging.WARNING, "403")
    assert len(refused) == 1 and "no backfill" in refused[0]
    assert await redis.exists(keys.bars("1m", "AAPL")) == 0


async def test_a_429_waits_for_retry_after_and_retries_the_same_ticker(
        massive_http, redis, namespace, caplog) -> None:
    keys = Keys(namespace)
    pub = await publisher(redis, keys)
    now = time.time()
    serve_day(massive_http, now)
    massive_http.then(rate_limited("1"))
    await backfill(massive_http, pub, CallBudget(5), now).run(TICKERS)
    requests = massive_http.seen()
    assert [r.path.split("/")[4] for r in requests] == ["AAPL", "AAPL", "MSFT", "TSLA"]
    assert requests[1].at - requests[0].at >= 0.95
    assert len(lines(caplog, logging.WARNING, "429); retrying AAPL in 1 s")) == 1
    assert len(await stored(redis, keys, "AAPL")) == 4


async def test_a_rest_producer_backfills_at_start_through_its_shared_budget(
        massive_http, redis, redis_url, namespace) -> None:
    keys = Keys(namespace)
    minute = serve_day(massive_http, time.time())
    massive_http.serve(snapshot_entry("AAPL", 190.0, time.time_ns()))
    settings = Settings(redis_url=redis_url, namespace=namespace, tickers=("AAPL",),
                        massive_api_key=Secret(API_KEY), massive_base_url=massive_http.url,
                        poll_interval_s=1.0, massive_calls_per_minute=100)
    runner = ProducerRunner(settings, redis, owner_id="rest")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_until(lambda: any("aggs" in r.path for r in massive_http.seen()),
                         what="the aggregates call")

        async def backfilled() -> bool:
            return bool(await redis.zcard(keys.bars("1m", "AAPL")) >= 4)

        await wait_until(backfilled, what="the backfilled bars")
        bars = await stored(redis, keys, "AAPL")
        assert [b.t for b in bars][-1] == minute - 60 and bars[-1].v == 1200.0
        source = runner.source
        assert source is not None and getattr(source, "budget", None) is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_the_backfill_leaves_the_poller_its_places_in_the_window() -> None:
    budget = CallBudget(5, window_s=0.4)
    for _ in range(2):
        budget.note()  # the poller's calls, paced by its own interval
    started = time.monotonic()
    await budget.take(leave=4)  # the backfill may use only the fifth place
    assert time.monotonic() - started >= 0.35
    budget.note()  # the poller never waits
    assert budget.wait_s() == 0.0
