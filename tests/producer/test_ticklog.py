"""The tick log ``NS:ticks`` and the epoch, written by the publisher into a real
redis-server: one entry per tick in the same script as the cache and the publishes, the
count and age caps, and an epoch that only a wiped dataset changes."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

import producer.publisher as publisher_module
from producer.publisher import Publisher
from producer.sources.base import Quote
from shared.codec import decode_map, decode_update
from shared.keys import Keys
from shared.ticklog import decode_entry, parse_entry_id

pytestmark = pytest.mark.integration
TICKERS = ["AAPL", "MSFT", "TSLA"]


class Clock:
    """A wall clock the test moves by hand (the age cap is about wall time)."""

    def __init__(self) -> None:
        self.ms = 1_764_064_800_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(publisher_module, "_now_ms", fake)
    return fake


async def start(redis: aioredis.Redis, keys: Keys, owner: str = "me", **caps) -> Publisher:
    await redis.set(keys.lease, owner)
    pub = Publisher(redis, keys, owner, **caps)
    pub.begin(TICKERS, {})
    return pub


async def tick(pub: Publisher, n: int = 1, price: float = 100.0) -> None:
    for i in range(n):
        await pub.publish({t: Quote(price + i / 100, 1.0 + i) for t in TICKERS})
        await pub.settle()
    assert not pub.failure.done()


async def log_ids(redis: aioredis.Redis, keys: Keys) -> list[tuple[int, int]]:
    return [parse_entry_id(i) for i, _ in await redis.xrange(keys.ticks)]


async def test_each_tick_is_one_entry_equal_to_the_published_map(aredis, namespace) -> None:
    keys = Keys(namespace)
    pub = await start(aredis, keys)
    pubsub = aredis.pubsub()
    await pubsub.subscribe(keys.prices)
    await pubsub.get_message(timeout=1)
    await tick(pub, 3)
    published = []
    while (m := await pubsub.get_message(timeout=0.2)) is not None:
        published.append(m["data"])
    entries = [decode_entry(i, f) for i, f in await aredis.xrange(keys.ticks)]
    assert [e.raw_map for e in entries] == published and len(entries) == 3
    for entry in entries:  # the id's first part is the tick's last seq
        assert entry.seq == max(u.seq for u in decode_map(entry.raw_map).values())
    cache = {k.decode(): decode_update(v) for k, v in (await aredis.hgetall(keys.latest)).items()}
    assert cache == entries[-1].updates  # the cache and the log's top are the same tick
    await pubsub.aclose()


async def test_the_log_and_the_cache_are_written_by_one_script(aredis, namespace) -> None:
    # The lease fence covers the log too: a producer that lost its lease appends nothing.
    keys = Keys(namespace)
    pub = await start(aredis, keys)
    await tick(pub)
    await aredis.set(keys.lease, "someone-else")
    await pub.publish({"AAPL": Quote(120.0, 9.0)})
    await pub.settle()
    assert pub.failure.done()
    assert await aredis.xlen(keys.ticks) == 1


async def test_the_count_cap_keeps_the_newest_ticks(aredis, namespace, clock) -> None:
    keys = Keys(namespace)
    pub = await start(aredis, keys, history_len=150)
    await tick(pub, 600)
    ids = await log_ids(aredis, keys)
    # MAXLEN ~ drops whole stream nodes (100 entries each by default): between 150 and 250.
    assert 150 <= len(ids) < 250
    top = max(u.seq for u in decode_map(
        (await aredis.xrevrange(keys.ticks, count=1))[0][1][b"map"]).values())
    assert ids[-1][0] == top and ids == sorted(ids)


async def test_the_age_cap_drops_ticks_older_than_the_limit(aredis, namespace, clock) -> None:
    keys = Keys(namespace)
    pub = await start(aredis, keys, history_s=10)
    for _ in range(30):  # one tick per wall second
        await tick(pub)
        clock.ms += 1000
    ids = await log_ids(aredis, keys)
    newest = ids[-1][1]
    assert all(newest - ms <= 10_000 for _, ms in ids)
    assert len(ids) == 11  # exactly the last 10 s (the age cap is exact)


async def test_the_age_cap_reaches_entries_of_an_earlier_term(aredis, namespace, clock) -> None:
    keys = Keys(namespace)
    first = await start(aredis, keys, history_s=10)
    await tick(first, 5)
    clock.ms += 5000
    second = await start(aredis, keys, owner="other", history_s=10)  # a standby took over
    second.begin(TICKERS, {}, await log_ids(aredis, keys))
    await tick(second)
    assert len(await log_ids(aredis, keys)) == 6  # the old ones are only 5 s old
    clock.ms += 6000  # now they are 11 s old
    await tick(second)
    ids = await log_ids(aredis, keys)
    assert len(ids) == 2 and ids == sorted(ids)


async def test_a_new_term_goes_above_the_log_even_without_ns_seq(aredis, namespace) -> None:
    keys = Keys(namespace)
    pub = await start(aredis, keys)
    await tick(pub, 2)
    top = (await log_ids(aredis, keys))[-1][0]
    await aredis.delete(keys.seq, keys.latest)  # lost, but the log survived
    other = await start(aredis, keys, owner="other")
    other.begin(TICKERS, {}, await log_ids(aredis, keys))
    await tick(other)
    ids = await log_ids(aredis, keys)
    assert len(ids) == 3 and ids[-1][0] > top


async def test_the_epoch_is_made_once_and_again_only_after_a_wipe(aredis, namespace) -> None:
    keys = Keys(namespace)
    pub = await start(aredis, keys)
    await tick(pub)
    epoch = await aredis.get(keys.epoch)
    assert epoch is not None and len(epoch) == 16
    other = await start(aredis, keys, owner="other")  # another producer, another term
    await tick(other, 3)
    assert await aredis.get(keys.epoch) == epoch
    await aredis.delete(keys.epoch, keys.ticks)  # the dataset was wiped
    await tick(other)
    again = await aredis.get(keys.epoch)
    assert again is not None and again != epoch
    await aredis.delete(keys.epoch)
    await tick(other)
    assert await aredis.get(keys.epoch) not in (None, epoch, again)  # never a repeat


async def test_no_log_when_the_count_cap_is_zero(aredis, namespace) -> None:
    keys = Keys(namespace)
    pub = await start(aredis, keys, history_len=0)
    await tick(pub, 3)
    assert await aredis.exists(keys.ticks) == 0
    assert await aredis.hlen(keys.latest) == 3
