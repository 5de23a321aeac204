"""The durable consumer of `shared.subscriber` (XREADGROUP on ``NS:ticks``): real
producer and consumer processes on a real redis-server, SIGKILLed mid-stream."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from bench.contract_publisher import ContractWriter
from shared.keys import Keys
from shared.subscriber import LogTrimmed
from tests.helpers.poll import wait_for
from tests.helpers.support import ROOT, running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
PRICES = {"AAPL": 190.0, "MSFT": 420.0, "GOOG": 170.0}  # partitions 0, 1, 2 when P = 3
FAST = {"PRICEFEED_TICK_INTERVAL": "0.02", "PRICEFEED_TICKERS": "AAPL,MSFT,TSLA"}


class Worker:
    """`tests.helpers.durable_worker` as a process; what it wrote is in ``out``."""

    def __init__(self, redis_url: str, namespace: str, consumer: str, out: Path,
                 slow_ms: float = 0) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.durable_worker", redis_url, namespace, "g",
             consumer, str(out), str(slow_ms)], cwd=ROOT, stderr=subprocess.PIPE)

    def lines(self) -> list[list[str]]:
        return [ln.split() for ln in self.out.read_text().splitlines()] if self.out.exists() else []

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(10)


def log_ids(client: redis.Redis, keys: Keys) -> list[str]:
    return [i.decode() for i, _ in client.xrange(keys.ticks)]


def test_a_killed_consumer_loses_nothing_and_acks_nothing_twice(
    sredis, redis_url, service_env, namespace, artifacts_dir, tmp_path
):
    keys = Keys(namespace)
    out = tmp_path / "processed.txt"
    with running(["producer"], {**service_env, **FAST}, artifacts_dir / f"durable-{namespace}"):
        wait_for(lambda: sredis.xlen(keys.ticks) >= 5, what="ticks")
        first = Worker(redis_url, namespace, "c1", out, slow_ms=15)
        wait_for(lambda: sum(ln[0] == "seen" for ln in first.lines()) >= 20, what="processing")
        wait_for(lambda: sredis.xpending(keys.ticks, "g")["pending"] > 0, what="a batch in hand")
        first.stop(signal.SIGKILL)  # mid-batch: delivered, some not yet acked
        assert sredis.xpending(keys.ticks, "g")["pending"] > 0
        wait_for(lambda: sredis.xlen(keys.ticks) >= 150, what="ticks while it was dead")
        second = Worker(redis_url, namespace, "c2", out)  # another name: claims c1's entries
        wait_for(lambda: sum(ln[0] == "seen" for ln in second.lines()) >= 150, what="catch-up")
    logged = log_ids(sredis, keys)  # the producer stopped: this is every tick
    wait_for(lambda: logged[-1] in {ln[1] for ln in second.lines() if ln[0] == "ack"},
             what="the last tick processed")
    assert second.stop() == 0
    lines = second.lines()
    seen = {ln[1] for ln in lines if ln[0] == "seen"}
    assert set(logged) <= seen  # none lost
    acks = collections.Counter(ln[1] for ln in lines if ln[0] == "ack" and ln[2] == "1")
    # An XACK the killed consumer sent whose reply it never wrote down: Redis may have
    # taken it (then no one acks that tick again, and pending is 0 below) or not (then the
    # second consumer acks it, once).
    unanswered = {ln[1] for ln in lines if ln[0] == "acking"} - {
        ln[1] for ln in lines if ln[0] == "ack"}
    assert set(acks) | unanswered == set(logged)  # every tick acked
    assert max(acks.values()) == 1  # none acked twice
    assert not any(ln[0] == "ack" and ln[2] == "0" for ln in lines)
    assert sredis.xpending(keys.ticks, "g")["pending"] == 0


async def test_a_group_left_behind_by_the_trim_gets_a_clear_error(world):
    writer = await world.writer({"AAPL": 190.0})
    for _ in range(3):
        await writer.atick()
    processed: list[int] = []
    three = asyncio.Event()

    async def handler(entry) -> None:
        processed.append(entry.seq)
        if len(processed) == 3:
            three.set()

    task = asyncio.create_task(world.consume("g", "c", handler, start="0"))
    await asyncio.wait_for(three.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for _ in range(5):
        await writer.atick()
    keys = world.layout.of("AAPL")
    world.node(keys).xtrim(keys.ticks, minid=str(processed[-1] + 3), approximate=False)
    with pytest.raises(LogTrimmed, match=f"{re.escape(keys.ticks)} trimmed 2 entries .*never read"):
        await asyncio.wait_for(world.consume("g", "c", handler), 5)
    assert processed == [1, 2, 3]


async def test_every_tick_is_handled_once_then_acked(world):
    """Each log entry (of every partition, on a Cluster) reaches the handler once, and is
    acked after it: nothing stays pending."""
    writer = await world.writer(PRICES)
    for _ in range(4):
        await writer.atick()
    logs = {keys: [i.decode() for i, _ in world.node(keys).xrange(keys.ticks)]
            for keys in {world.layout.of(t) for t in PRICES}}
    expected = sum(len(ids) for ids in logs.values())
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def handler(entry) -> None:
        seen.append((world.layout.of(next(iter(entry.updates))).ticks, entry.entry_id))
        if len(seen) == expected:
            done.set()

    task = asyncio.create_task(world.consume("g", "c", handler, start="0", block_ms=100))
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sorted(seen) == sorted((keys.ticks, i) for keys, ids in logs.items() for i in ids)
    for keys in logs:
        assert world.node(keys).xpending(keys.ticks, "g")["pending"] == 0


async def test_a_handler_that_fails_leaves_its_tick_pending_for_another_consumer(world):
    writer = await world.writer(PRICES)
    await writer.atick()

    async def failing(entry) -> None:
        if "MSFT" in entry.updates:
            raise RuntimeError("the handler broke")

    with pytest.raises(RuntimeError, match="the handler broke"):
        await asyncio.wait_for(world.consume("g", "c1", failing, start="0", block_ms=100), 10)
    keys = world.layout.of("MSFT")
    assert world.node(keys).xpending(keys.ticks, "g")["pending"] == 1
    claimed = asyncio.Event()

    async def handler(entry) -> None:
        if "MSFT" in entry.updates:
            claimed.set()

    task = asyncio.create_task(world.consume("g", "c2", handler, claim_idle_ms=0,
                                             block_ms=100))
    try:
        await asyncio.wait_for(claimed.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert world.node(keys).xpending(keys.ticks, "g")["pending"] == 0


def test_the_worker_stops_cleanly_on_sigterm(redis_url, namespace, tmp_path, sredis):
    ContractWriter(sredis, Keys(namespace), {"AAPL": 190.0}).tick()
    worker = Worker(redis_url, namespace, "c", tmp_path / "out.txt")
    wait_for(lambda: ["ack"] == [ln[0] for ln in worker.lines() if ln[0] == "ack"],
             what="the tick processed")
    assert worker.stop() == 0
