"""The reference writer (bench/contract_publisher.py), which tests and the gateway
benchmark use as their feed, writes what the producer writes: one tick of each, side by
side in one Redis, must look alike to every reader of docs/REDIS.md."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bench.contract_publisher import ContractWriter
from producer.publisher import Publisher
from producer.sources.base import Quote
from shared.codec import decode_map, decode_update
from shared.keys import Keys
from shared.ticklog import decode_entry
from tests.helpers.topologies import ServerWorld

PRICES = {"AAPL": 190.0, "MSFT": 420.5}
# With P = 3: AAPL and TSLA in partition 0, MSFT in 1, GOOG in 2.
PRICES3 = {"AAPL": 190.0, "MSFT": 420.5, "TSLA": 250.0, "GOOG": 170.0}


async def _seen(redis: aioredis.Redis, keys: Keys, write) -> dict[str, object]:
    """What a reader finds after one tick: channels in order, the cache, the log, the epoch."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.prices)
    await pubsub.psubscribe(keys.price_pattern)
    for _ in range(2):
        await pubsub.get_message(timeout=1)  # the two subscribe replies
    await write()
    messages = []
    while (message := await pubsub.get_message(timeout=0.2)) is not None:
        messages.append((message["channel"].decode(), message["data"]))
    await pubsub.aclose()
    updates = [decode_update(data) for channel, data in messages[:-1]]
    log = await redis.xrange(keys.ticks)
    assert len(log) == 1
    entry = decode_entry(*log[0])  # the id's seq is the tick's last seq
    cache = {t.decode(): decode_update(v) for t, v in (await redis.hgetall(keys.latest)).items()}
    assert decode_map(messages[-1][1]) == entry.updates == cache == {u.ticker: u for u in updates}
    return {
        "channels": [channel.removeprefix(keys.namespace) for channel, _ in messages],
        "seqs": sorted(u.seq for u in cache.values()),
        "log": (entry.seq, sorted(entry.updates)),
        "epoch": len(await redis.get(keys.epoch) or b""),
        "seq_at_least_last": int(await redis.get(keys.seq)) >= entry.seq,
    }


async def test_the_reference_writer_and_the_producer_write_one_tick_alike(fake_redis):
    real, reference = Keys("real"), Keys("reference")
    await fake_redis.set(real.lease, "me")
    publisher = Publisher(fake_redis, real, "me")
    publisher.begin(list(PRICES), {})

    async def produce() -> None:
        await publisher.publish({t: Quote(p, 10.0) for t, p in PRICES.items()})
        await publisher.settle()

    writer = ContractWriter(fake_redis, reference)
    produced = await _seen(fake_redis, real, produce)
    written = await _seen(fake_redis, reference, lambda: writer.atick(PRICES))
    assert written == produced
    assert produced["channels"] == [":price:AAPL", ":price:MSFT", ":prices"]
    assert produced["epoch"] == 16


async def test_moves_carry_previous_prices_and_seqs_rise(fake_redis):
    writer = ContractWriter(fake_redis, Keys("w"), {"AAPL": 100.0}, {"AAPL": 95.0})
    first = (await writer.atick())["AAPL"]
    second = (await writer.atick(moves={"AAPL": 0.5}))["AAPL"]
    assert (first.previous_price, first.price, first.seq) == (100.0, 100.1, 1)
    assert (second.previous_price, second.price, second.seq) == (100.1, 50.05, 2)
    assert second.reference_price == 95.0


def _subscribed(world: ServerWorld, keys: Keys, tickers: list[str]):
    """A sync pubsub of ``keys``' tick-map channel and its tickers' channels (shard channels,
    one SSUBSCRIBE each, on a Cluster), confirmed."""
    pubsub = world.node(keys).pubsub()
    channels = [keys.price(t) for t in tickers] + [keys.prices]
    for channel in channels:
        (pubsub.ssubscribe if keys.sharded else pubsub.subscribe)(channel)
    for _ in channels:
        assert pubsub.get_message(timeout=1)["type"] in ("subscribe", "ssubscribe")
    return pubsub


def _messages(pubsub) -> list[tuple[str, bytes]]:
    out = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        out.append((message["channel"].decode(), message["data"]))
    pubsub.close()
    return out


@pytest.mark.integration
async def test_each_unit_is_one_scope_s_log_entry_cache_and_channels(world):
    """What a reader of one scope (everything on one server, one partition on a Cluster)
    finds after a tick: the channels in order, and the log entry, cache, tick map and epoch
    of that scope alike (docs/CLUSTER.md "One atomic unit per partition per tick")."""
    scopes: dict[Keys, list[str]] = {}
    for ticker in PRICES3:  # the order the writer publishes in
        scopes.setdefault(world.layout.of(ticker), []).append(ticker)
    assert len(scopes) == (1 if world.name == "server" else 3)  # one partition per node
    pubsubs = {keys: _subscribed(world, keys, tickers) for keys, tickers in scopes.items()}
    written = await (await world.writer()).atick(PRICES3)
    for keys, tickers in scopes.items():
        node = world.node(keys)
        messages = _messages(pubsubs[keys])
        assert [c.removeprefix(keys.base) for c, _ in messages] == [
            *(f":price:{t}" for t in tickers), ":prices"]
        (entry,) = [decode_entry(*e) for e in node.xrange(keys.ticks)]
        cache = {t.decode(): decode_update(v) for t, v in node.hgetall(keys.latest).items()}
        assert decode_map(messages[-1][1]) == entry.updates == cache == {
            t: written[t] for t in tickers}
        assert [decode_update(d) for _, d in messages[:-1]] == [written[t] for t in tickers]
        assert entry.seq == max(u.seq for u in cache.values()) <= int(node.get(keys.seq))
        assert len(node.get(keys.epoch)) == 16
