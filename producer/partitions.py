"""Sharing a Cluster's partitions among the live producers, and splitting a batch of
quotes by partition (docs/CLUSTER.md "Producers scale out").

Every producer registers in ``NS:{meta}:producers`` (its id scored with the Unix ms its
registration expires, `REGISTRATION_TTL_MS` ahead), renewed each `BALANCE_INTERVAL_S`;
whoever renews removes the expired entries. With N live producers a producer's share is
⌈P / N⌉: it gives up what it holds beyond its share, highest first, and takes free
partitions, lowest first, up to it (`producer.cluster_runner`).

``NS:{meta}:config`` holds the P the first producer was started with: a producer with
another P refuses to start (`check_partitions`), since a ticker's partition, and so the
meaning of every seq, log and bar, depends on P.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.sources.base import PriceBatch, Quote
from shared.errors import PricefeedError
from shared.keys import Keys, Layout, partition_of
from shared.redisio.cluster import ClusterTopology

REGISTRATION_TTL_MS: Final[int] = 3000
BALANCE_INTERVAL_S: Final[float] = 1.0


class PartitionsMismatch(PricefeedError):
    """``NS:{meta}:config`` holds another number of partitions than this process's."""


def share_of(partitions: int, live: int) -> int:
    """How many partitions a producer holds at most when ``live`` producers share them."""
    return math.ceil(partitions / max(live, 1))


def beyond_share(held: Sequence[int], share: int) -> list[int]:
    """The held partitions to give up, highest first."""
    return sorted(held, reverse=True)[: max(0, len(held) - share)]


async def check_partitions(redis: aioredis.Redis, meta: Keys, partitions: int) -> None:
    """Write ``partitions`` into the config unless one is there; raise `PartitionsMismatch`
    (one line naming both values) when the stored one differs."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(meta.config, "partitions", partitions)
        pipe.hget(meta.config, "partitions")
        _, raw = await pipe.execute()
    stored = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    if stored != str(partitions):
        raise PartitionsMismatch(
            f"{meta.config} says partitions={stored[:20]} but PRICEFEED_PARTITIONS="
            f"{partitions}: every producer and gateway of a namespace needs the same P "
            "(another P needs a fresh PRICEFEED_NAMESPACE)")


async def register(redis: aioredis.Redis, meta: Keys, owner_id: str) -> int:
    """Renew this producer's registration, drop the expired ones; the live producers."""
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(meta.producers, {owner_id: now_ms + REGISTRATION_TTL_MS})
        pipe.zremrangebyscore(meta.producers, "-inf", f"({now_ms}")
        pipe.zcard(meta.producers)
        *_, live = await pipe.execute()
    return int(live)


async def unregister(redis: aioredis.Redis, meta: Keys, owner_id: str) -> None:
    """Leave the registry (a clean stop: the others' shares grow at their next round)."""
    await redis.zrem(meta.producers, owner_id)


async def free_partitions(topology: ClusterTopology, layout: Layout, indexes: Sequence[int],
                          owner_id: str) -> list[int]:
    """Those of ``indexes`` whose lease is free or ours, lowest first: one pipelined round
    trip per node rather than a ``SET NX`` per partition (a producer below its share looks
    every second). A node that fails, or a slot that moved, counts as not free."""
    scopes = {i: layout.partition(i) for i in indexes}
    free: list[int] = []
    for address, group in topology.group(scopes).items():
        try:
            async with topology.client_at(address).pipeline(transaction=False) as pipe:
                for i in group:
                    pipe.get(scopes[i].lease)
                values = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError):
            continue
        mine = owner_id.encode()
        free += [i for i, v in zip(group, values, strict=True) if v is None or v == mine]
    return sorted(free)


class Splitter:
    """Splits batches of quotes by partition; keeps the split of the last ticker list (a
    source's batches repeat it tick after tick)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._last: tuple[Sequence[str], dict[int, tuple[list[str], np.ndarray]]] | None = None

    def split(self, quotes: Mapping[str, Quote]) -> dict[int, Mapping[str, Quote]]:
        """``quotes`` as one batch per partition (a `PriceBatch` stays one)."""
        if isinstance(quotes, PriceBatch):
            prices = np.asarray(quotes.prices)
            return {i: PriceBatch(tickers, prices[at], quotes.timestamp)
                    for i, (tickers, at) in self._groups(quotes.tickers).items()}
        out: dict[int, dict[str, Quote]] = {}
        for ticker, quote in quotes.items():
            out.setdefault(partition_of(ticker, self.partitions), {})[ticker] = quote
        return dict(out)

    def _groups(self, tickers: Sequence[str]) -> dict[int, tuple[list[str], np.ndarray]]:
        last = self._last
        if last is not None and (last[0] is tickers or last[0] == tickers):
            return last[1]
        of = np.array([partition_of(t, self.partitions) for t in tickers], dtype=np.int64)
        groups: dict[int, tuple[list[str], np.ndarray]] = {}
        for index in np.unique(of).tolist():
            at = np.flatnonzero(of == index)
            groups[index] = ([tickers[j] for j in at.tolist()], at)
        self._last = (list(tickers), groups)
        return groups
