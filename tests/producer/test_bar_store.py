"""Bars in a real Redis: what the tick writes, the close channel, retention, removal, and
continuity across a clean restart and a crash-takeover (docs/BARS.md)."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis

from producer.lease import LeaseLost
from producer.publisher import BarOptions, Publisher
from producer.sources.base import PriceBatch
from shared.bars import INTERVALS, decode_bar
from shared.keys import Keys
from tests.producer.test_bars import recompute

pytestmark = pytest.mark.integration

TICKERS = ["AAPL", "MSFT", "NVDA"]


def options(forming_interval_s: float = 0.0, keep_1s: int = 3600) -> BarOptions:
    return BarOptions({"1s": keep_1s, "1m": 86_400}, forming_interval_s)


async def start(redis: aioredis.Redis, keys: Keys, owner: str, opts: BarOptions,
                history_len: int = 10_000) -> Publisher:
    await redis.set(keys.lease, owner)
    pub = Publisher(redis, keys, owner, history_len=history_len, bars=opts)
    pub.begin(TICKERS, {})
    await pub.restore_bars(TICKERS)
    return pub


def ticks(seed: int, n: int, t0: float = 1_764_064_790.25):
    rng = random.Random(seed)
    ts = t0
    out = []
    for _ in range(n):
        ts += rng.choice([0.1, 0.2, 0.45, 1.3])
        out.append((ts, [round(rng.uniform(50, 60), 2) for _ in TICKERS]))
    return out


async def run(pub: Publisher, batch) -> list:
    log = []
    for ts, prices in batch:
        await pub.publish(PriceBatch(TICKERS, np.array(prices), ts))
        await pub.settle()
        log += [(t, p, ts, None) for t, p in zip(TICKERS, prices, strict=True)]
    assert not pub.failure.done()
    return log


async def stored(redis: aioredis.Redis, keys: Keys, interval: str) -> dict:
    """(ticker, start) -> Bar of every closed bar, asserting one member per start."""
    out = {}
    for ticker in TICKERS:
        members = await redis.zrange(keys.bars(interval, ticker), 0, -1, withscores=True)
        starts = [int(score) for _, score in members]
        assert len(starts) == len(set(starts)), f"duplicate {interval} bar of {ticker}"
        for raw, score in members:
            bar = decode_bar(raw)
            assert bar.t == int(score)
            out[(ticker, bar.t)] = bar
    return out


async def forming(redis: aioredis.Redis, keys: Keys, interval: str) -> dict:
    raw = await redis.hgetall(keys.forming(interval))
    return {(k.decode(), decode_bar(v).t): decode_bar(v) for k, v in raw.items()}


async def assert_equal_to_recomputation(redis, keys, updates) -> None:
    for interval, width in INTERVALS.items():
        expected = recompute(updates, width)
        got = {**await stored(redis, keys, interval), **await forming(redis, keys, interval)}
        assert got == expected, interval


@pytest.fixture
async def redis(redis_url: str) -> aioredis.Redis:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_stored_bars_equal_bars_recomputed_from_every_update(redis, namespace) -> None:
    keys = Keys(namespace)
    pub = await start(redis, keys, "me", options())
    updates = await run(pub, ticks(1, 60))
    await assert_equal_to_recomputation(redis, keys, updates)


async def test_each_close_is_published_once_on_its_channel(redis, namespace) -> None:
    keys = Keys(namespace)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.bar_channel("1s"), keys.bar_channel("1m"))
    pub = await start(redis, keys, "me", options(0.25))
    await run(pub, ticks(2, 40))
    seen: dict[str, list] = {"1s": [], "1m": []}
    while (message := await pubsub.get_message(timeout=0.2)) is not None:
        if message["type"] != "message":
            continue
        interval = message["channel"].decode().rsplit(":", 1)[1]
        for ticker, bar in orjson.loads(message["data"]).items():
            seen[interval].append((ticker, decode_bar(orjson.dumps(bar))))
    await pubsub.aclose()
    for interval in INTERVALS:
        closed = await stored(redis, keys, interval)
        published = [(t, b) for (t, _), b in closed.items()]
        assert sorted(seen[interval], key=str) == sorted(published, key=str)
    assert seen["1m"], "the run crosses a minute"


async def test_closed_bars_are_trimmed_to_the_retention_and_expire(redis, namespace) -> None:
    keys = Keys(namespace)
    pub = await start(redis, keys, "me", options(keep_1s=60))
    await run(pub, [(1_764_064_800.0 + s, [10.0, 20.0, 30.0]) for s in range(0, 100)])
    members = await redis.zrange(keys.bars("1s", "AAPL"), 0, -1, withscores=True)
    assert [int(s) for _, s in members] == list(range(1_764_064_800 + 39, 1_764_064_800 + 99))
    assert 0 < await redis.ttl(keys.bars("1s", "AAPL")) <= 60
    assert 86_000 < await redis.ttl(keys.bars("1m", "AAPL")) <= 86_400


async def test_a_removed_ticker_loses_its_forming_bar_and_its_bars_expire(
        redis, namespace) -> None:
    keys = Keys(namespace)
    pub = await start(redis, keys, "me", options())
    await run(pub, ticks(3, 12))
    await pub.remove_ticker("MSFT")
    for interval in INTERVALS:
        assert await redis.hget(keys.forming(interval), "MSFT") is None
        assert await redis.hget(keys.forming(interval), "AAPL") is not None
    assert await redis.ttl(keys.bars("1s", "MSFT")) > 0  # gone one retention after the close


async def test_a_clean_restart_continues_the_forming_bar_exactly(redis, namespace) -> None:
    keys = Keys(namespace)
    batch = ticks(4, 80)
    first = await start(redis, keys, "a", options(0.25))
    updates = await run(first, batch[:37])  # stops in the middle of a bar
    await first.flush_bars()
    await first.close()
    second = await start(redis, keys, "b", options(0.25))
    updates += await run(second, batch[37:])
    await assert_equal_to_recomputation(redis, keys, updates)


async def test_a_takeover_after_a_crash_replays_the_tick_log_and_loses_nothing(
        redis, namespace) -> None:
    keys = Keys(namespace)
    batch = ticks(5, 90)
    first = await start(redis, keys, "a", options(0.25))
    updates = await run(first, batch[:41])
    assert first.bars is not None and first.bars.dirty()  # some updates not yet written
    # crash: no flush, no release; the standby takes the (expired) lease
    second = await start(redis, keys, "b", options(0.25))
    updates += await run(second, batch[41:])
    await first.publish(PriceBatch(TICKERS, np.array([1.0, 1.0, 1.0]), batch[-1][0]))
    await first.settle()  # the old owner is fenced out, bars included
    assert isinstance(first.failure.exception(), LeaseLost)
    await second.flush_bars()  # the forming bars as they are in memory
    await assert_equal_to_recomputation(redis, keys, updates)


async def test_without_a_tick_log_a_crash_leaves_no_hole_and_no_duplicate(
        redis, namespace) -> None:
    keys = Keys(namespace)
    batch = ticks(5, 90)
    first = await start(redis, keys, "a", options(0.25), history_len=0)
    updates = await run(first, batch[:41])
    second = await start(redis, keys, "b", options(0.25), history_len=0)
    updates += await run(second, batch[41:])
    for interval, width in INTERVALS.items():
        expected = recompute(updates, width)
        got = {**await stored(redis, keys, interval), **await forming(redis, keys, interval)}
        assert set(got) == set(expected), f"{interval}: a hole or an extra bar"
        for key, bar in got.items():  # it may lose the last forming interval's updates
            want = expected[key]
            assert bar.lo >= want.lo and bar.h <= want.h and 0 < bar.n <= want.n


async def test_a_crash_with_forming_bars_written_every_tick_loses_nothing(
        redis, namespace) -> None:
    keys = Keys(namespace)
    batch = ticks(6, 70)
    first = await start(redis, keys, "a", options(0.0))
    updates = await run(first, batch[:33])
    second = await start(redis, keys, "b", options(0.0))
    updates += await run(second, batch[33:])
    await assert_equal_to_recomputation(redis, keys, updates)


async def test_with_bars_off_nothing_is_written(redis, namespace) -> None:
    keys = Keys(namespace)
    await redis.set(keys.lease, "me")
    pub = Publisher(redis, keys, "me", bars=None)
    pub.begin(TICKERS, {})
    await pub.restore_bars(TICKERS)
    await run(pub, ticks(7, 20))
    assert await redis.keys(f"{namespace}:bars:*") == []
    assert await redis.keys(f"{namespace}:forming:*") == []
