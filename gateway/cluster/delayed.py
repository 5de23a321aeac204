"""Delayed entitlements on a Cluster (docs/ACCESS.md, docs/CLUSTER.md "The gateway on a
Cluster"): `gateway.delayed` partition by partition. Each partition's log is read on the
primary serving it; a ticker lives in one partition, so the partitions' states are
disjoint and merge without conflict.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from gateway.cluster.clients import ClusterClients
from gateway.delayed import DelayedLog, bars_until, state_at
from gateway.updates import EncodedUpdate
from shared.keys import Keys


async def cluster_state_at(clients: ClusterClients, cutoff_ms: int,
                           wanted: frozenset[str] | None
                           ) -> tuple[dict[str, EncodedUpdate], list[int | None]]:
    """Every wanted ticker's update as of ``cutoff_ms``, and each partition's log position
    (None where its log does not reach back that far)."""
    async def read(client: aioredis.Redis, keys: Keys) -> Any:
        return await state_at(client, keys, cutoff_ms, wanted)

    state: dict[str, EncodedUpdate] = {}
    positions: list[int | None] = []
    for part, position in await clients.each(read):
        state.update(part)
        positions.append(position)
    return state, positions


async def cluster_state_of(clients: ClusterClients, cutoff_ms: int,
                           ticker: str) -> dict[str, EncodedUpdate]:
    """``ticker``'s update as of ``cutoff_ms``, from its partition."""
    keys = clients.layout.of(ticker)

    async def read(client: aioredis.Redis) -> dict[str, EncodedUpdate]:
        state, _ = await state_at(client, keys, cutoff_ms, frozenset({ticker}))
        return state

    return await clients.call(keys, read)


async def cluster_bars_until(clients: ClusterClients, ticker: str, interval: str, limit: int,
                             since: float | None, cutoff_s: float) -> list[bytes] | None:
    """`gateway.delayed.bars_until` on ``ticker``'s partition, the watchlist read from
    the meta slot."""
    meta, keys = clients.layout.meta, clients.layout.of(ticker)

    async def is_watched(client: aioredis.Redis) -> bool:
        return bool(await client.sismember(meta.watchlist, ticker))

    watched = await clients.meta(is_watched)
    return await clients.call(keys, lambda client: bars_until(
        client, keys, ticker, interval, limit, since, cutoff_s, watched))


class ClusterDelayedLog:
    """One delayed stream's readers, one `DelayedLog` per partition."""

    def __init__(self, clients: ClusterClients, wanted: frozenset[str] | None, delay_s: float,
                 positions: list[int | None]) -> None:
        self.clients = clients
        self.readers = [
            (keys, DelayedLog(None, keys, wanted, delay_s, position or 0))  # type: ignore[arg-type]
            for keys, position in zip(clients.layout.all(), positions, strict=True)]

    async def release(self, now_ms: int) -> dict[str, EncodedUpdate]:
        """The wanted updates of every partition published up to ``now_ms - delay``."""
        out: dict[str, EncodedUpdate] = {}
        for keys, reader in self.readers:
            async def one(client: aioredis.Redis,
                          reader: DelayedLog = reader) -> dict[str, EncodedUpdate]:
                reader.redis = client  # the primary serving the partition now
                return await reader.release(now_ms)

            out.update(await self.clients.call(keys, one))
        return out
