"""A small subscriber API for other services: the cache snapshot, then live updates.

    from contextlib import aclosing
    import redis.asyncio as aioredis
    from shared.keys import Keys
    from shared.subscriber import snapshot, subscribe

    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    prices = await snapshot(client, Keys())                # {TICKER: PriceUpdate}
    async with aclosing(subscribe(client, Keys(), tickers=["AAPL"])) as batches:
        async for batch in batches:                        # Batch(updates, snapshot)
            ...

`subscribe` subscribes to ``NS:prices`` *before* reading ``NS:latest``, so no tick falls
between the two; updates already covered by the snapshot (by ``seq``) are dropped. After
a lost connection it retries with capped backoff and yields a fresh snapshot batch
(``snapshot=True``) once Redis answers again, so a consumer never misses a price. When
``NS:epoch`` changes (a wiped Redis: the seqs may start over), the next batch is a fresh
snapshot with ``reset=True``: drop what you hold, it belongs to another dataset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.backoff import Backoff
from shared.codec import decode_map, decode_update
from shared.errors import CodecError
from shared.keys import Keys
from shared.models import PriceUpdate

log = logging.getLogger(__name__)

# What a lost or refused connection looks like from redis-py.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class Batch:
    """Updates keyed by ticker. ``snapshot`` is True for the full state read from the
    cache (the first batch, and the first after every reconnect); False for a live tick.
    ``reset`` is True for the snapshot of a new dataset (``NS:epoch`` changed)."""

    updates: Mapping[str, PriceUpdate]
    snapshot: bool
    reset: bool = False


async def snapshot(
    redis: Redis, keys: Keys, tickers: Collection[str] | None = None
) -> dict[str, PriceUpdate]:
    """The latest price of each ticker in ``NS:latest`` (only ``tickers`` when given).

    A malformed cache entry is logged and left out rather than failing the whole read.
    """
    if tickers is not None:
        names = sorted(tickers)
        values: list[Any] = await redis.hmget(keys.latest, names) if names else []
        raw = {name: value for name, value in zip(names, values, strict=True) if value}
    else:
        raw = {_text(k): v for k, v in (await redis.hgetall(keys.latest)).items()}
    out: dict[str, PriceUpdate] = {}
    for ticker, payload in raw.items():
        try:
            update = decode_update(payload)
        except CodecError as e:
            log.warning("skipping malformed cache entry %s: %s", ticker, e)
            continue
        out[update.ticker] = update
    return out


async def subscribe(
    redis: Redis,
    keys: Keys,
    tickers: Collection[str] | None = None,
    *,
    backoff: Backoff | None = None,
    on_state: Callable[[bool], None] | None = None,
) -> AsyncGenerator[Batch, None]:
    """Yield a snapshot batch, then one batch per producer tick, forever.

    ``tickers`` narrows both; ``on_state(True|False)`` is told when the subscription is
    live or lost. Close it with ``aclosing`` (or by cancelling the task iterating it).
    """
    wanted = frozenset(tickers) if tickers is not None else None
    retry = backoff or Backoff(initial_s=0.2, cap_s=5.0)
    down = False
    while True:
        try:
            async for batch in _session(redis, keys, wanted):
                if down or batch.snapshot:
                    retry.reset()
                    if down:
                        log.info("subscription to %s restored", keys.prices)
                    down = False
                    if on_state is not None:
                        on_state(True)
                yield batch
        except CONNECTION_ERRORS as e:
            if not down:
                log.warning("lost Redis (%s); retrying with backoff", e or type(e).__name__)
                down = True
                if on_state is not None:
                    on_state(False)
            await asyncio.sleep(retry.next_delay())


async def _session(
    redis: Redis, keys: Keys, wanted: frozenset[str] | None
) -> AsyncGenerator[Batch, None]:
    """One connection's worth of batches; raises a connection error when it breaks."""
    pubsub: PubSub = redis.pubsub()
    try:
        await pubsub.subscribe(keys.prices)
        seen: dict[str, int] = {}
        confirmations = bad = 0
        epoch: bytes | str | None = None
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "subscribe":
                # The first confirmation opens the session; another one means redis-py
                # reconnected and re-subscribed on its own: ticks may have been missed,
                # so read the cache again.
                confirmations += 1
                epoch = await redis.get(keys.epoch)
                state = await snapshot(redis, keys, wanted)
                seen = {t: u.seq for t, u in state.items()}
                yield Batch(state, snapshot=True)
                continue
            if message["type"] != "message" or confirmations == 0:
                continue
            current = await redis.get(keys.epoch)
            if current != epoch:  # a wiped Redis: this tick is in the new snapshot
                log.warning("%s changed: Redis holds a new dataset; taking its snapshot",
                            keys.epoch)
                reset, epoch = epoch is not None, current
                state = await snapshot(redis, keys, wanted)
                seen = {t: u.seq for t, u in state.items()}
                yield Batch(state, snapshot=True, reset=reset)
                continue
            try:
                fresh = _fresh(message["data"], wanted, seen)
            except CodecError as e:
                bad += 1
                if bad == 1 or bad % 1000 == 0:  # one line per problem, not a flood
                    log.warning("skipped %d malformed tick message(s); last: %s", bad, e)
                continue
            if fresh:
                yield Batch(fresh, snapshot=False)
    finally:
        with contextlib.suppress(*CONNECTION_ERRORS):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def _fresh(
    payload: Any, wanted: frozenset[str] | None, seen: dict[str, int]
) -> dict[str, PriceUpdate]:
    """The updates of one tick message that are wanted and newer than what was seen;
    raises `CodecError` for a malformed message."""
    tick = decode_map(payload)
    fresh: dict[str, PriceUpdate] = {}
    for ticker, update in tick.items():
        if wanted is not None and ticker not in wanted:
            continue
        if update.seq <= seen.get(ticker, -1):
            continue
        seen[ticker] = update.seq
        fresh[ticker] = update
    return fresh


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
