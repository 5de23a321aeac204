"""The publisher against fakeredis (with Lua): what one tick writes, the lease fence,
removal, bad quotes, and the cache rewrite after a term starts."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from producer.lease import LeaseLost
from producer.publisher import Publisher
from producer.sources.base import Quote
from shared.codec import decode_map, decode_update, encode_update
from shared.keys import Keys
from shared.models import PriceUpdate

KEYS = Keys("unit")
OWNER = "me"


@pytest.fixture
async def publisher(fake_redis: aioredis.Redis) -> Publisher:
    await fake_redis.set(KEYS.lease, OWNER)
    pub = Publisher(fake_redis, KEYS, OWNER)
    pub.begin(["AAPL", "MSFT", "TSLA"], {})
    return pub


async def publish(pub: Publisher, quotes) -> None:
    """One tick, landed in Redis (publish returns once the tick is sent)."""
    await pub.publish(quotes)
    await pub.settle()


async def subscribe(redis: aioredis.Redis) -> aioredis.client.PubSub:
    pubsub = redis.pubsub()
    await pubsub.psubscribe(f"{KEYS.namespace}:price*")
    assert (await pubsub.get_message(timeout=1))["type"] == "psubscribe"
    return pubsub


async def drain(pubsub: aioredis.client.PubSub) -> list[tuple[str, bytes]]:
    out = []
    while (message := await pubsub.get_message(timeout=0.05)) is not None:
        out.append((message["channel"].decode(), message["data"]))
    return out


async def cache(redis: aioredis.Redis) -> dict[str, PriceUpdate]:
    raw = await redis.hgetall(KEYS.latest)
    return {k.decode(): decode_update(v) for k, v in raw.items()}


async def test_a_tick_writes_cache_channels_and_map(fake_redis, publisher) -> None:
    pubsub = await subscribe(fake_redis)
    await publish(publisher, {"AAPL": Quote(190.004, 10.0), "MSFT": Quote(420.5, 10.0)})
    messages = await drain(pubsub)
    assert [ch for ch, _ in messages] == ["unit:price:AAPL", "unit:price:MSFT", "unit:prices"]
    aapl, msft = decode_update(messages[0][1]), decode_update(messages[1][1])
    # The first update is flat, and its price is the day's reference.
    assert aapl == PriceUpdate("AAPL", 190.0, 190.0, 10.0, 1, 190.0)
    assert msft == PriceUpdate("MSFT", 420.5, 420.5, 10.0, 2, 420.5)
    assert decode_map(messages[2][1]) == {"AAPL": aapl, "MSFT": msft}
    assert await cache(fake_redis) == {"AAPL": aapl, "MSFT": msft}
    assert int(await fake_redis.get(KEYS.seq)) >= 2  # a block is reserved ahead
    await pubsub.aclose()


async def test_previous_price_and_seq_carry_across_ticks(fake_redis, publisher) -> None:
    await publish(publisher, {"AAPL": Quote(190.0, 1.0)})
    await publish(publisher, {"AAPL": Quote(189.5, 2.0)})
    update = (await cache(fake_redis))["AAPL"]
    assert (update.previous_price, update.price, update.seq) == (190.0, 189.5, 2)
    assert update.direction == "down" and update.change == -0.5


async def test_seq_continues_from_redis(fake_redis, publisher) -> None:
    await fake_redis.set(KEYS.seq, 1000)
    await publish(publisher, {"AAPL": Quote(190.0, 1.0), "TSLA": Quote(250.0, 1.0)})
    assert sorted(u.seq for u in (await cache(fake_redis)).values()) == [1001, 1002]


async def test_seq_never_goes_back_when_redis_lost_it(fake_redis, publisher) -> None:
    await publish(publisher, {"AAPL": Quote(190.0, 1.0)})
    first = (await cache(fake_redis))["AAPL"].seq
    await fake_redis.delete(KEYS.seq, KEYS.latest)  # a Redis restarted without its data
    publisher.begin(["AAPL"], {})  # the runner starts a new term after the reconnect
    await publish(publisher, {"AAPL": Quote(191.0, 2.0)})
    assert (await cache(fake_redis))["AAPL"].seq > first
    assert int(await fake_redis.get(KEYS.seq)) >= (await cache(fake_redis))["AAPL"].seq


async def test_a_new_term_never_reuses_the_rest_of_a_seq_block(fake_redis, publisher) -> None:
    await publish(publisher, {"AAPL": Quote(190.0, 1.0)})
    other = Publisher(fake_redis, KEYS, "other")  # a second producer takes over
    await fake_redis.set(KEYS.lease, "other")
    other.begin(["AAPL"], {})
    await publish(other, {"AAPL": Quote(190.5, 2.0)})
    taken_over = (await cache(fake_redis))["AAPL"].seq
    await fake_redis.set(KEYS.lease, OWNER)  # and we get the lease back
    publisher.begin(["AAPL"], await cache(fake_redis))
    await publish(publisher, {"AAPL": Quote(191.0, 3.0)})
    assert (await cache(fake_redis))["AAPL"].seq > taken_over


async def test_a_lost_lease_fences_the_write(fake_redis, publisher) -> None:
    await fake_redis.set(KEYS.lease, "someone-else")
    await publish(publisher, {"AAPL": Quote(190.0, 1.0)})
    assert await fake_redis.hlen(KEYS.latest) == 0
    with pytest.raises(LeaseLost):
        publisher.failure.result()
    await fake_redis.set(KEYS.lease, OWNER)
    await publish(publisher, {"AAPL": Quote(190.0, 1.0)})  # dropped until the next term
    assert await fake_redis.hlen(KEYS.latest) == 0


async def test_a_redis_error_is_stored_not_raised(fake_redis, publisher) -> None:
    fake_redis.connection_pool.connection_kwargs["server"].connected = False
    await publish(publisher, {"AAPL": Quote(190.0, 1.0)})
    with pytest.raises(RedisConnectionError):
        publisher.failure.result()


async def test_removed_ticker_is_deleted_and_never_published(fake_redis, publisher) -> None:
    await publish(publisher, {"AAPL": Quote(190.0, 1.0), "MSFT": Quote(420.0, 1.0)})
    pubsub = await subscribe(fake_redis)
    await publisher.remove_ticker("MSFT")
    assert set(await cache(fake_redis)) == {"AAPL"}
    await publish(publisher, {"AAPL": Quote(191.0, 2.0), "MSFT": Quote(421.0, 2.0)})
    channels = [ch for ch, _ in await drain(pubsub)]
    assert channels == ["unit:price:AAPL", "unit:prices"]
    assert set(await cache(fake_redis)) == {"AAPL"}
    await publisher.add_ticker("MSFT")
    await publish(publisher, {"MSFT": Quote(421.0, 3.0)})
    assert (await cache(fake_redis))["MSFT"].previous_price == 421.0  # a fresh start
    await pubsub.aclose()


async def test_unwatched_and_invalid_quotes_are_dropped(fake_redis, publisher, caplog) -> None:
    caplog.set_level(logging.WARNING)
    batch = {
        "AAPL": Quote(190.0, 1.0), "MSFT": Quote(float("nan"), 1.0),
        "TSLA": Quote(0.004, 1.0), "NVDA": Quote(800.0, 1.0),
    }
    await publish(publisher, batch)
    await publish(publisher, batch)
    assert set(await cache(fake_redis)) == {"AAPL"}
    assert not publisher.failure.done()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "MSFT, TSLA" in warnings[0].getMessage()


async def test_a_new_term_rewrites_the_cache_and_continues(fake_redis, publisher) -> None:
    await publish(publisher, {"AAPL": Quote(190.0, 1.0), "MSFT": Quote(420.0, 1.0)})
    await fake_redis.delete(KEYS.latest)  # Redis lost its data
    publisher.begin(["AAPL", "MSFT"], {})
    await publish(publisher, {"AAPL": Quote(191.0, 2.0)})  # a partial batch (Massive style)
    after = await cache(fake_redis)
    assert after["AAPL"].previous_price == 190.0 and after["AAPL"].price == 191.0
    assert after["MSFT"].price == 420.0  # rewritten from memory though not in the batch


async def test_begin_continues_from_the_cached_updates(fake_redis) -> None:
    await fake_redis.set(KEYS.lease, OWNER)
    cached = PriceUpdate("AAPL", 180.0, 179.0, 1.0, 77)
    await fake_redis.hset(KEYS.latest, "AAPL", encode_update(cached))
    pub = Publisher(fake_redis, KEYS, OWNER)
    pub.begin(["AAPL"], {"AAPL": cached})
    await publish(pub, {"AAPL": Quote(181.0, 2.0)})
    update = (await cache(fake_redis))["AAPL"]
    assert (update.previous_price, update.seq) == (180.0, 78)


async def test_a_large_tick_is_one_write(fake_redis) -> None:
    # More pairs than one HSET chunk of the script (2,000), and one tick map holding them all.
    await fake_redis.set(KEYS.lease, OWNER)
    tickers = [f"T{i}" for i in range(4500)]
    pub = Publisher(fake_redis, KEYS, OWNER)
    pub.begin(tickers, {})
    pubsub = fake_redis.pubsub()
    await pubsub.subscribe(KEYS.prices)
    await pubsub.get_message(timeout=1)
    await publish(pub, {t: Quote(100.0 + i / 100, 1.0) for i, t in enumerate(tickers)})
    assert await fake_redis.hlen(KEYS.latest) == 4500
    message = await pubsub.get_message(timeout=1)
    tick = decode_map(message["data"])
    assert len(tick) == 4500 and tick["T4499"].price == 144.99
    await pubsub.aclose()


async def test_scripts_are_loaded_again_after_redis_forgot_them(fake_redis, publisher) -> None:
    await publish(publisher, {"AAPL": Quote(190.0, 1.0)})
    await fake_redis.script_flush()  # what a restarted Redis looks like
    await publish(publisher, {"AAPL": Quote(191.0, 2.0)})
    assert not publisher.failure.done()
    assert (await cache(fake_redis))["AAPL"].price == 191.0


DAY1 = 1_764_633_600.0  # 2025-12-02 00:00 UTC
DAY2 = DAY1 + 86_400


async def test_the_day_change_is_since_the_first_price_of_the_utc_day(fake_redis, publisher):
    await publish(publisher, {"AAPL": Quote(200.0, DAY1 + 60)})
    await publish(publisher, {"AAPL": Quote(210.0, DAY1 + 61)})
    update = (await cache(fake_redis))["AAPL"]
    assert (update.reference_price, update.day_change_percent) == (200.0, 5.0)
    assert update.change_percent == 5.0  # the tick's own change still beside it
    await publish(publisher, {"AAPL": Quote(189.0, DAY1 + 62)})
    update = (await cache(fake_redis))["AAPL"]
    assert (update.reference_price, update.day_change_percent) == (200.0, -5.5)
    await publish(publisher, {"AAPL": Quote(180.0, DAY2 + 1)})  # a new UTC day starts
    update = (await cache(fake_redis))["AAPL"]
    assert (update.reference_price, update.day_change_percent) == (180.0, 0.0)


async def test_a_restarted_producer_keeps_the_days_reference(fake_redis, publisher):
    await publish(publisher, {"AAPL": Quote(200.0, DAY1 + 60)})
    await publish(publisher, {"AAPL": Quote(201.0, DAY1 + 61)})
    restarted = Publisher(fake_redis, KEYS, OWNER)  # a new process, same Redis
    restarted.begin(["AAPL", "MSFT"], await cache(fake_redis))
    await publish(restarted, {"AAPL": Quote(202.0, DAY1 + 900), "MSFT": Quote(400.0, DAY1 + 900)})
    after = await cache(fake_redis)
    assert after["AAPL"].reference_price == 200.0 and after["AAPL"].day_change_percent == 1.0
    assert after["MSFT"].reference_price == 400.0  # first seen by the new process
    assert await fake_redis.ttl(KEYS.reference("2025-12-02")) > 86_400


async def test_a_reference_from_the_source_wins_over_the_first_price(fake_redis, publisher):
    await publish(publisher, {"AAPL": Quote(200.0, DAY1 + 60, reference=190.0),
                              "MSFT": Quote(400.0, DAY1 + 60)})
    after = await cache(fake_redis)
    assert after["AAPL"].reference_price == 190.0
    assert after["AAPL"].day_change_percent == round(10 / 190 * 100, 4)
    assert after["MSFT"].reference_price == 400.0
    assert not await fake_redis.hexists(KEYS.reference("2025-12-02"), "AAPL")


async def test_no_reference_is_written_after_the_lease_is_lost(fake_redis, publisher):
    await fake_redis.set(KEYS.lease, "someone-else")
    await publisher.publish({"AAPL": Quote(200.0, DAY1 + 60)})
    with pytest.raises(LeaseLost):
        await publisher.failure
    assert not await fake_redis.exists(KEYS.reference("2025-12-02"))
