"""The reference writer of the wire contract (docs/REDIS.md "How the producer writes a
tick"), written the plainest way with redis-py; tests and benchmarks use it as their feed.

Per tick: the seqs from ``INCRBY NS:seq``, then one MULTI/EXEC of ``XADD NS:ticks`` (id
``<last seq>-<ms>``, the tick map), ``SET NS:epoch … NX``, the ``NS:latest`` fields, one
``PUBLISH`` per update on ``NS:price:{T}`` and the tick map on ``NS:prices``. It is not
the producer's code (no seq blocks, no lease, no bars), so a test of a reader on it checks
the contract, not the producer's habits.

`ClusterContractWriter` is its Cluster twin (docs/CLUSTER.md): the same unit per
partition, on the primary serving it, with ``SPUBLISH``.

As a program it is the gateway benchmark's fallback feed, when the producer is not wanted
(it keeps the harness independent of the simulator's cost); ticks follow the wall clock so
the offered rate does not drift:

    python -m bench.contract_publisher --redis-url redis://127.0.0.1:6379/0 \\
        --tickers AAPL,MSFT --interval 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import logging
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from shared.codec import encode_map, encode_update
from shared.keys import Keys, Layout, partition_of
from shared.models import PriceUpdate, normalize_ticker
from shared.redisio import CONNECTION_ERRORS
from shared.redisio.cluster import SLOT_ERRORS, ClusterTopology
from shared.ticklog import new_epoch

log = logging.getLogger("bench.publisher")
T = TypeVar("T")

DEFAULT_MOVE = 1.001  # a tick without moves raises every price by 0.1 %
HISTORY_LEN = 10_000  # the XADD MAXLEN ~ of the log, as the producer's default history


class ContractWriter:
    """Writes ticks of ``prices`` through ``client`` (sync for `tick`, asyncio for `atick`).

    A tick is given as new prices (``tick({"AAPL": 191.0})``: only those tickers) or as
    factors on the current ones (``tick(moves={"AAPL": 0.99})``; every ticker moves, by
    +0.1 % unless told). ``references`` are the day's reference prices, if any.
    """

    def __init__(self, client: Any, keys: Keys, prices: Mapping[str, float] | None = None,
                 references: Mapping[str, float] | None = None) -> None:
        self.client = client
        self.keys = keys
        self.prices = dict(prices or {})
        self.references = dict(references or {})

    def tick(self, prices: Mapping[str, float] | None = None, *,
             moves: Mapping[str, float] | None = None, publish: bool = True
             ) -> dict[str, PriceUpdate]:
        """One tick through a sync client; the updates written, by ticker."""
        planned = self._plan(prices, moves)
        last = int(self.client.incrby(self.keys.seq, len(planned)))
        updates = self._updates(planned, last)
        pipe = self.client.pipeline(transaction=True)
        queue_unit(pipe, self.keys, updates, last, publish)
        pipe.execute()
        return self._landed(updates)

    async def atick(self, prices: Mapping[str, float] | None = None, *,
                    moves: Mapping[str, float] | None = None, publish: bool = True
                    ) -> dict[str, PriceUpdate]:
        """One tick through an asyncio client; the updates written, by ticker."""
        planned = self._plan(prices, moves)
        return self._landed(await write_unit(self.client, self.keys, planned, self._updates,
                                             publish))

    async def aheartbeat(self, status: bytes | None = None) -> None:
        """The producer's liveness key, and its source status when given (3 s TTL)."""
        await self.client.set(self.keys.producer, b"reference-writer", ex=3)
        if status is not None:
            await self.client.set(self.keys.producer_status, status, ex=3)

    def walk(self, rng: random.Random) -> dict[str, float]:
        """New prices: a Gaussian step (0.1 % sd) from each current one."""
        return {t: p * (1 + rng.gauss(0, 0.001)) for t, p in self.prices.items()}

    def _plan(self, prices: Mapping[str, float] | None, moves: Mapping[str, float] | None
              ) -> dict[str, float]:
        if prices is not None:
            return dict(prices)
        return {t: p * (moves or {}).get(t, DEFAULT_MOVE) for t, p in self.prices.items()}

    def _updates(self, planned: Mapping[str, float], last: int) -> dict[str, PriceUpdate]:
        """The updates of ``planned`` with seqs up to ``last`` (the prices move only once
        they landed: a unit sent again after a lost node carries the same previous prices)."""
        now = time.time()
        first = last - len(planned) + 1
        return {ticker: PriceUpdate.create(ticker, price, self.prices.get(ticker), now,
                                           first + i, self.references.get(ticker))
                for i, (ticker, price) in enumerate(planned.items())}

    def _landed(self, updates: dict[str, PriceUpdate]) -> dict[str, PriceUpdate]:
        for ticker, update in updates.items():
            self.prices[ticker] = update.price
        return updates


class ClusterContractWriter(ContractWriter):
    """The Cluster twin of `ContractWriter` (docs/CLUSTER.md "One atomic unit per partition
    per tick"): the tick's tickers are split by partition, and each partition's unit —
    ``INCRBY NS:{pI}:seq``, then one MULTI/EXEC of its log entry, epoch, cache and
    ``SPUBLISH``es — goes to the primary serving that partition's slot. A unit refused by a
    node that no longer serves the slot, or lost with its node, is sent again after the
    topology is asked again, for up to ``retry_s``. Async only (`atick`)."""

    def __init__(self, topology: ClusterTopology, layout: Layout,
                 prices: Mapping[str, float] | None = None,
                 references: Mapping[str, float] | None = None, *,
                 retry_s: float = 15.0) -> None:
        super().__init__(None, layout.meta, prices, references)
        self.topology, self.layout, self.retry_s = topology, layout, retry_s

    def tick(self, prices: Mapping[str, float] | None = None, *,
             moves: Mapping[str, float] | None = None, publish: bool = True
             ) -> dict[str, PriceUpdate]:
        raise TypeError("a Cluster writer is async: use atick")

    async def atick(self, prices: Mapping[str, float] | None = None, *,
                    moves: Mapping[str, float] | None = None, publish: bool = True
                    ) -> dict[str, PriceUpdate]:
        """One tick: one unit per partition it touches, in partition order; the updates
        written, by ticker."""
        planned = self._plan(prices, moves)
        by_partition: dict[int, dict[str, float]] = {}
        for ticker, price in planned.items():
            by_partition.setdefault(partition_of(ticker, self.layout.partitions), {})[
                ticker] = price
        written: dict[str, PriceUpdate] = {}
        for index in sorted(by_partition):
            keys = self.layout.partition(index)
            written |= self._landed(await self._unit(keys, by_partition[index], publish))
        return written

    async def aheartbeat(self, status: bytes | None = None) -> None:
        """Every partition's producer liveness key (and status), as its lease holder's."""
        for keys in self.layout.all():
            await self._retrying(functools.partial(self._beat, keys, status))

    async def _beat(self, keys: Keys, status: bytes | None) -> None:
        client = self.topology.client_for(keys)
        await client.set(keys.producer, b"reference-writer", ex=3)
        if status is not None:
            await client.set(keys.producer_status, status, ex=3)

    async def aconfig(self) -> None:
        """``NS:{meta}:config`` as the first producer writes it: ``partitions`` -> P."""
        await self._retrying(lambda: self.topology.client_for(self.layout.meta).hsetnx(
            self.layout.meta.config, "partitions", self.layout.partitions))

    async def _unit(self, keys: Keys, planned: Mapping[str, float], publish: bool
                    ) -> dict[str, PriceUpdate]:
        return await self._retrying(lambda: write_unit(
            self.topology.client_for(keys), keys, planned, self._updates, publish))

    async def _retrying(self, send: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.retry_s
        for attempt in itertools.count():
            try:
                if self.topology.generation == 0:
                    await self.topology.refresh()
                return await send()
            except (*SLOT_ERRORS, *CONNECTION_ERRORS) as e:
                if time.monotonic() > deadline:
                    raise
                if attempt == 0:  # one line per unit, not one per retry
                    log.info("a unit was refused or lost (%s); asking the Cluster again",
                             type(e).__name__)
                await asyncio.sleep(0.05)
                with contextlib.suppress(*SLOT_ERRORS, *CONNECTION_ERRORS):
                    await self.topology.refresh(force=True)
        raise AssertionError("unreachable")


Planner = Callable[[Mapping[str, float], int], dict[str, PriceUpdate]]


async def write_unit(client: aioredis.Redis, keys: Keys, planned: Mapping[str, float],
                     plan: Planner, publish: bool) -> dict[str, PriceUpdate]:
    """One atomic unit of ``keys``' scope: reserve the seqs, then one MULTI/EXEC."""
    last = int(await client.incrby(keys.seq, len(planned)))
    updates = plan(planned, last)
    async with client.pipeline(transaction=True) as pipe:
        queue_unit(pipe, keys, updates, last, publish)
        await pipe.execute()
    return updates


def queue_unit(pipe: redis.client.Pipeline | aioredis.client.Pipeline, keys: Keys,
               updates: Mapping[str, PriceUpdate], last: int, publish: bool) -> None:
    """The commands of one unit: the log entry, the epoch, the cache and the publishes
    (``SPUBLISH`` on a Cluster's partition, as `Keys.sharded` says)."""
    tick_map = encode_map(updates.values())
    payloads = {t: encode_update(u) for t, u in updates.items()}
    pipe.xadd(keys.ticks, {"map": tick_map}, id=f"{last}-{int(time.time() * 1000)}",
              maxlen=HISTORY_LEN, approximate=True)
    pipe.set(keys.epoch, new_epoch(), nx=True)
    pipe.hset(keys.latest, mapping=payloads)  # type: ignore[arg-type]
    if publish:
        send = pipe.spublish if keys.sharded else pipe.publish
        for ticker, payload in payloads.items():
            send(keys.price(ticker), payload)
        send(keys.prices, tick_map)


def run(writer: ContractWriter, interval_s: float, seed: int, stop: list[bool]) -> None:
    """Tick on a fixed wall-clock schedule until ``stop[0]``; a late tick is not made up."""
    rng = random.Random(seed)
    next_t = time.monotonic()
    while not stop[0]:
        try:
            writer.tick(writer.walk(rng))
        except redis.RedisError as e:
            log.warning("tick failed: %s", e)
        next_t += interval_s
        delay = next_t - time.monotonic()
        if delay < 0:
            next_t = time.monotonic()
        else:
            time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Publish the pricefeed wire contract at a fixed rate.")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--namespace", default="pricefeed")
    p.add_argument("--tickers", required=True, help="comma list")
    p.add_argument("--interval", type=float, default=0.5, help="seconds per tick")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    tickers = [normalize_ticker(t) for t in args.tickers.split(",") if t.strip()]
    stop = [False]

    def on_signal(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rng = random.Random(args.seed)
    client = redis.Redis.from_url(args.redis_url)
    keys = Keys(args.namespace)
    client.sadd(keys.watchlist, *tickers)
    try:
        writer = ContractWriter(client, keys, {t: rng.uniform(50, 300) for t in tickers})
        run(writer, args.interval, args.seed, stop)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
