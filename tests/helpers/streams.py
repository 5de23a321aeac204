"""Raw SSE clients that keep every frame with its arrival time (for timing assertions)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from shared.keys import partition_of
from shared.subscriber import Batch, Feed
from tests.helpers.system import check_frame, split_frames


@dataclass
class Recorder:
    """One stream's frames: (monotonic arrival, data or None for pings/retry), and the
    arrival of each `event: reset`."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    frames: list[tuple[float, dict | None]] = field(default_factory=list)
    resets: list[float] = field(default_factory=list)
    status: int = 0
    ended: bool = False

    def data(self, since: float = 0.0) -> list[tuple[float, dict]]:
        return [(t, d) for t, d in self.frames if d is not None and t >= since]

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
            async with client.stream("GET", self.url + "/api/stream/prices",
                                     headers=self.headers) as response:
                self.status = response.status_code
                buffer = b""
                async for chunk in response.aiter_bytes():
                    whole, buffer = split_frames(buffer + chunk)
                    now = time.monotonic()
                    self.frames.extend((now, check_frame(f)) for f in whole)
                    self.resets.extend(now for f in whole if b"event: reset" in f)
        self.ended = True


@contextlib.asynccontextmanager
async def recording(*recorders: Recorder) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(r.run()) for r in recorders]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await task


@contextlib.asynccontextmanager
async def consuming(url: str, namespace: str) -> AsyncIterator[list[tuple[float, Batch]]]:
    """`shared.subscriber.Feed.subscribe` on ``url`` (any topology) in a task; its batches
    with their arrival times, for a test to watch while it breaks things."""
    feed = Feed.from_url(url, namespace)
    got: list[tuple[float, Batch]] = []

    async def run() -> None:
        async with contextlib.aclosing(feed.subscribe()) as batches:
            async for batch in batches:
                got.append((time.monotonic(), batch))

    task = asyncio.create_task(run())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await feed.aclose()


def seqs_rise_between_resets(recorder: Recorder, partitions: int = 0) -> int:
    """Per ticker, seqs rise strictly from event to event, counting afresh after each
    `event: reset` (a resubscription under the same epoch sends only what changed: README
    "Resume and continuity"), and no seq is handed to two different updates: across the
    dataset on one server, within a partition on a Cluster of ``partitions``
    (docs/CLUSTER.md). The number of updates checked."""
    held: dict[str, int] = {}
    handed: dict[tuple[int, int], tuple[str, float, float]] = {}
    resets = sorted(recorder.resets)
    checked = 0
    for t, data in recorder.data():
        while resets and resets[0] <= t:
            resets.pop(0)
            held = {}
        for ticker, update in data.items():
            seq = update["seq"]
            assert seq > held.get(ticker, 0), ("repeated or backward", ticker, seq, held)
            held[ticker] = seq
            value = (ticker, update["price"], update["timestamp"])
            key = (partition_of(ticker, partitions) if partitions else 0, seq)
            assert handed.setdefault(key, value) == value, ("seq reused", key, value)
            checked += 1
    return checked
