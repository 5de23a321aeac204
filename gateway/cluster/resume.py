"""Resuming a stream on a Cluster (docs/CLUSTER.md "The gateway on a Cluster").

An id ``<E>-<v0.….vP-1>-<prev>`` can be resumed when ``E`` is the Cluster's epoch now and
each component is still in its partition's log (or is its log's end: nothing missed
there). By default the client gets one event with the latest of every ticker that changed
(`gateway.stream.resume.changed_since`, per partition); with ``?replay=all`` every missed
tick of every partition, merged in the order of their entry times (the ``<ms>`` of
``<seq>-<ms>``; two partitions' ticks of one producer tick share it), each event carrying
the position after it. The replay is bounded as on one server: at most
`REPLAY_MAX_UPDATES` seqs behind in all, read a chunk at a time, then sorted in memory.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import redis.asyncio as aioredis

from gateway.cluster.clients import ClusterClients
from gateway.cluster.reads import ClusterView
from gateway.hub import Changes, Client
from gateway.positions import Vector
from gateway.stream.request import EventId
from gateway.stream.resume import REPLAY_MAX_UPDATES, _entry_batch, _readers
from shared.keys import Keys

CHUNK = 100  # log entries per XRANGE


def resumable(view: ClusterView, last: EventId, replay_all: bool) -> bool:
    """True when the client at ``last`` can be made whole without a reset."""
    pos = last.pos
    if last.epoch != view.epoch or not isinstance(pos, Vector) or len(pos) != len(view.top):
        return False
    for first, top, at in zip(view.first, view.top, pos, strict=True):
        if at != top and not 0 < first <= at < top:
            return False
    behind = sum(t - p for t, p in zip(view.top, pos, strict=True))
    return not replay_all or behind <= REPLAY_MAX_UPDATES


async def replay(clients: ClusterClients, client: Client, after: Vector,
                 top: Vector) -> AsyncGenerator[Changes, None]:
    """Every tick after ``after`` up to ``top``, all partitions merged by entry time, each
    narrowed to the client's filter and at the position after it."""
    entries: list[tuple[int, int, int, Changes]] = []
    for index, (start, end) in enumerate(zip(after, top, strict=True)):
        if start < end:
            keys = clients.layout.partition(index)

            async def read(redis: aioredis.Redis, keys: Keys = keys, index: int = index,
                           start: int = start, end: int = end) -> list[Any]:
                return await _read(redis, keys, start, end, client, index)

            entries += await clients.call(keys, read)
    entries.sort(key=lambda entry: entry[:2])
    pos = after
    for _, index, seq, batch in entries:
        pos = pos.replace(index, seq)
        if batch.items:
            yield Changes(batch.items, pos)


async def _read(redis: aioredis.Redis, keys: Keys, start: int, end: int, client: Client,
                index: int) -> list[tuple[int, int, int, Changes]]:
    """``(ms, partition, seq, batch)`` of partition ``index``'s entries after ``start``
    up to ``end``."""
    out: list[tuple[int, int, int, Changes]] = []
    while start < end:
        async with _readers:
            chunk: Any = await redis.xrange(keys.ticks, min=str(start + 1), max=str(end),
                                            count=CHUNK)
        if not chunk:
            return out
        for entry_id, fields in chunk:
            batch = _entry_batch(entry_id, fields, client.tickers)
            if batch is not None:
                out.append((_ms_of(entry_id), index, _seq(entry_id, start), batch))
        start = max(start, _seq(chunk[-1][0], start))
    return out


def _ms_of(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[1])


def _seq(entry_id: bytes, default: int) -> int:
    head = entry_id.split(b"-", 1)[0]
    return int(head) if head.isdigit() else default
