"""shared.subscriber against real Redis: snapshot first, then ticks, narrowed by ticker,
and a fresh snapshot after a connection is lost. The tests taking ``world`` run on one
redis-server and on a P = 3 Cluster with one partition per primary (tests/helpers/
topologies.py), with the same assertions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from bench.contract_publisher import ContractWriter
from shared.backoff import Backoff
from shared.codec import encode_map
from shared.keys import Keys
from shared.models import PriceUpdate
from shared.subscriber import Batch, Feed, subscribe
from tests.helpers.topologies import ServerWorld

pytestmark = pytest.mark.integration

# With P = 3 on a Cluster: AAPL and TSLA in partition 0, MSFT in 1, GOOG in 2.
PRICES = {"AAPL": 190.0, "MSFT": 420.0, "TSLA": 250.0, "GOOG": 170.0}


@contextlib.asynccontextmanager
async def collecting(client: aioredis.Redis | ServerWorld, keys: Keys | None = None, **kwargs
                     ) -> AsyncIterator[asyncio.Queue]:
    """Run `subscribe` (of one client, or of a world) in a task that puts every batch (and
    state change) on a queue."""
    queue: asyncio.Queue = asyncio.Queue()
    kwargs["on_state"] = lambda up: queue.put_nowait(("state", up))

    def batches():
        if isinstance(client, ServerWorld):
            return client.subscribe(**kwargs)
        return subscribe(client, keys, **kwargs)

    async def run() -> None:
        async with contextlib.aclosing(batches()) as it:
            async for batch in it:
                queue.put_nowait(batch)

    task = asyncio.create_task(run())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_batch(queue: asyncio.Queue, timeout_s: float = 10.0) -> Batch:
    while True:
        item = await asyncio.wait_for(queue.get(), timeout_s)
        if isinstance(item, Batch):
            return item


async def test_snapshot_reads_the_cache_and_narrows_to_tickers(world):
    await (await world.writer(PRICES)).atick()
    keys = world.layout.of("AAPL")
    world.node(keys).hset(keys.latest, "BAD", b"{not json")  # must not spoil the read
    everything = await world.snapshot()
    assert set(everything) == set(PRICES)
    assert everything["AAPL"].price == round(190.0 * 1.001, 2)
    only = await world.snapshot(["MSFT", "NOPE"])
    assert set(only) == {"MSFT"}


async def test_subscribe_yields_the_snapshot_then_each_tick(world):
    writer = await world.writer(PRICES)
    first = await writer.atick()
    async with collecting(world) as queue:
        snap = await next_batch(queue)
        assert snap.snapshot and {t: u.seq for t, u in snap.updates.items()} == {
            t: u.seq for t, u in first.items()}
        assert all(snap.covers(t) for t in PRICES)
        keys = world.layout.of("AAPL")
        world.publish(keys, keys.prices, b"garbage")  # skipped, the stream goes on
        second = await writer.atick({"AAPL": 191.0})
        tick = await next_batch(queue)
        assert not tick.snapshot
        assert dict(tick.updates) == second


async def test_subscribe_narrows_to_the_tickers_asked_for(world):
    writer = await world.writer(PRICES)
    await writer.atick()
    async with collecting(world, tickers=["TSLA"]) as queue:
        assert set((await next_batch(queue)).updates) == {"TSLA"}
        await writer.atick()
        assert set((await next_batch(queue)).updates) == {"TSLA"}


async def test_subscribe_resumes_with_a_fresh_snapshot_after_redis_restarts(
        redis_server_factory, namespace):
    server = redis_server_factory()
    keys = Keys(namespace)
    client = aioredis.from_url(server.url, socket_connect_timeout=1)
    sync = redis.Redis(port=server.port)
    try:
        ContractWriter(sync, keys, PRICES).tick()
        fast = Backoff(initial_s=0.05, cap_s=0.2)
        async with collecting(client, keys, backoff=fast) as queue:
            assert await asyncio.wait_for(queue.get(), 5) == ("state", True)
            assert (await next_batch(queue)).snapshot
            server.stop()
            assert await asyncio.wait_for(queue.get(), 10) == ("state", False)
            server.start()
            # Written while nobody was subscribed: only a fresh snapshot can deliver it.
            # Redis came back empty: a fresh writer starts its seqs over under a new epoch.
            missed = ContractWriter(sync, keys, {"NVDA": 800.0}).tick(publish=False)
            batch = await next_batch(queue)
            assert batch.snapshot and batch.reset  # not comparable with what came before
            assert batch.updates["NVDA"] == missed["NVDA"]
    finally:
        sync.close()
        await client.aclose()


async def test_subscribe_takes_a_fresh_snapshot_when_its_connection_is_killed(world):
    writer = await world.writer(PRICES)
    await writer.atick()
    async with collecting(world, backoff=Backoff(initial_s=0.05, cap_s=0.2)) as queue:
        assert (await next_batch(queue)).snapshot
        # Written but never published: only a fresh snapshot can deliver it.
        missed = await writer.atick(publish=False)
        assert world.kill_subscriptions() >= 1
        batch = await next_batch(queue)
        while not (batch.snapshot and "AAPL" in batch.updates):
            batch = await next_batch(queue)
        assert batch.updates["AAPL"] == missed["AAPL"] and not batch.reset


async def test_a_wiped_dataset_gives_a_reset_snapshot_then_its_ticks(world):
    await (await world.writer(PRICES)).atick()
    async with collecting(world) as queue:
        assert not (await next_batch(queue)).reset
        world.wipe()  # a fresh producer starts its seqs over at 1
        fresh = await world.writer({"AAPL": 50.0})
        first = await fresh.atick()
        batch = await next_batch(queue)
        assert batch.snapshot and batch.reset and dict(batch.updates) == first
        assert batch.covers("AAPL")  # what to drop: AAPL's partition, or everything
        second = await fresh.atick()  # lower seqs than before the wipe, and still delivered
        tick = await next_batch(queue)
        assert not tick.snapshot and dict(tick.updates) == second


async def test_a_cancel_that_a_redis_read_swallows_still_ends_the_subscription(
        aredis, sredis, namespace, monkeypatch):
    """redis-py can lose a cancel that lands as ``get_message``'s own timeout fires (1 in 20
    Ctrl+C of the README's example hung forever): the subscription must end all the same."""
    keys = Keys(namespace)
    ContractWriter(sredis, keys, PRICES).tick()
    real = aioredis.client.PubSub.get_message
    swallowed = asyncio.Event()

    async def get_message_that_swallows_a_cancel(self, *args, **kwargs):
        try:
            return await real(self, *args, **kwargs)
        except asyncio.CancelledError:  # what the race does: the read just returns nothing
            swallowed.set()
            return None

    monkeypatch.setattr(aioredis.client.PubSub, "get_message", get_message_that_swallows_a_cancel)
    got: asyncio.Queue = asyncio.Queue()

    async def run() -> None:
        async with contextlib.aclosing(subscribe(aredis, keys)) as it:
            async for batch in it:
                got.put_nowait(batch)

    task = asyncio.create_task(run())
    assert (await asyncio.wait_for(got.get(), 10)).snapshot
    task.cancel()
    await asyncio.wait({task}, timeout=5)  # not wait_for: its own cancel would be swallowed too
    ended = task.done()
    if not ended:  # let the failure below be reported rather than hang the event loop
        monkeypatch.undo()
        task.cancel()
    assert ended, "the cancelled subscription kept running"
    assert task.cancelled() and swallowed.is_set()


async def test_a_dropped_cancel_ends_the_subscription_while_redis_refuses_it(
        aredis, namespace, monkeypatch):
    """A cancel that a Redis call dropped, followed by connection errors: the retry loop
    must not go on for ever (it never reaches the session's own check)."""
    inside = asyncio.Event()

    async def subscribe_that_drops_a_cancel_then_fails(self, *args, **kwargs):
        try:
            inside.set()
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:  # what wait_for does on 3.11: the cancel is gone
            pass
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(aioredis.client.PubSub, "subscribe",
                        subscribe_that_drops_a_cancel_then_fails)

    async def run() -> None:
        async with contextlib.aclosing(subscribe(aredis, Keys(namespace))) as it:
            async for _ in it:
                pass

    task = asyncio.create_task(run())
    await inside.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=5)  # not wait_for: its own cancel could be dropped
    ended = task.done()
    if not ended:  # report the failure rather than hang the event loop
        monkeypatch.undo()
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1)
    assert ended, "the cancelled subscription kept retrying"
    assert task.cancelled()


async def test_a_wiped_dataset_is_a_reset_even_before_anyone_writes_a_new_epoch(world):
    await (await world.writer(PRICES)).atick()
    async with collecting(world) as queue:
        assert (await next_batch(queue)).snapshot
        world.wipe()
        # A tick from a writer that keeps no epoch (an older producer, a script).
        keys = world.layout.of("AAPL")
        world.publish(keys, keys.prices,
                      encode_map([PriceUpdate.create("AAPL", 50.0, None, 1.0, 1)]))
        batch = await next_batch(queue)
        assert batch.snapshot and batch.reset and dict(batch.updates) == {}
        assert batch.covers("AAPL")


async def test_a_feed_from_the_url_alone_reads_and_follows_prices(world):
    """`Feed.from_url`: what a service with only REDIS_URL uses, on either topology."""
    writer = await world.writer(PRICES)
    first = await writer.atick()
    async with Feed.from_url(world.url, world.namespace) as feed:
        assert await feed.snapshot(["AAPL", "GOOG"]) == {t: first[t] for t in ("AAPL", "GOOG")}
        batches = feed.subscribe(["GOOG"])
        async with contextlib.aclosing(batches):
            snap = await asyncio.wait_for(anext(batches), 10)
            assert snap.snapshot and dict(snap.updates) == {"GOOG": first["GOOG"]}
            second = await writer.atick()
            tick = await asyncio.wait_for(anext(batches), 10)
            assert not tick.snapshot and dict(tick.updates) == {"GOOG": second["GOOG"]}
