"""Following the watchlist: the ``NS:watchlist`` set is the truth, ``NS:control`` the news.

Control messages are applied at once; the set is re-read every `RESYNC_INTERVAL_S` so a
message lost while disconnected heals by itself (docs/RELIABILITY.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, NoReturn

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.codec import decode_control
from shared.errors import CodecError
from shared.keys import Keys
from shared.logs import LogThrottle
from shared.models import is_valid_ticker

log = logging.getLogger(__name__)

RESYNC_INTERVAL_S: Final[float] = 3.0
MALFORMED_LOG_INTERVAL_S: Final[float] = 10.0

TickerAction = Callable[[str], Awaitable[None]]


class Watchlist:
    """The tickers to produce, kept in step with Redis for one term of the lease."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, defaults: Iterable[str], cap: int,
        on_add: TickerAction, on_remove: TickerAction,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.defaults = tuple(defaults)
        self.cap = cap
        self.on_add = on_add
        self.on_remove = on_remove
        self.current: dict[str, None] = {}  # an ordered set
        self.filled = False  # whether `load` filled an empty set
        self._warned: set[str] = set()
        self.malformed = 0  # control messages skipped as malformed
        self._malformed_log = LogThrottle(log, MALFORMED_LOG_INTERVAL_S)

    async def load(self, fallback: Iterable[str] | None = None) -> list[str]:
        """The set's tickers; a Redis that lost its data gets them back first.

        An empty set is refilled only when ``NS:watchlist:created`` is missing too: a
        user who removed every ticker keeps an empty watchlist, while a Redis that lost
        its data (or a new one) gets ``fallback`` (what the last term of this process
        produced, possibly nothing) or, on a first start, the configured defaults.
        `filled` tells which happened.
        """
        members = await self._read()
        self.filled = False
        if members:
            await self.redis.set(self.keys.watchlist_marker, _now(), nx=True)
        elif not await self.redis.exists(self.keys.watchlist_marker):
            members = list(dict.fromkeys(self.defaults if fallback is None else fallback))
            members = members[: self.cap]
            async with self.redis.pipeline(transaction=True) as pipe:
                if members:
                    pipe.sadd(self.keys.watchlist, *members)
                pipe.set(self.keys.watchlist_marker, _now(), nx=True)
                await pipe.execute()
            self.filled = True
            log.info("Redis is new or lost its data (no %s): filled the watchlist with %d "
                     "tickers", self.keys.watchlist_marker, len(members))
        else:
            log.info("the watchlist is empty (every ticker was removed); producing nothing")
        self.current = dict.fromkeys(members)
        return list(members)

    async def follow(self) -> NoReturn:
        """Apply control messages and re-read the set, until cancelled."""
        async with self.redis.pubsub() as pubsub:
            if self.keys.sharded:
                await pubsub.ssubscribe(self.keys.control)
            else:
                await pubsub.subscribe(self.keys.control)
            await self.resync()
            next_sync = time.monotonic() + RESYNC_INTERVAL_S
            while True:
                timeout = max(0.0, next_sync - time.monotonic())
                message = await pubsub.get_message(
                    ignore_subscribe_messages=not self.keys.sharded, timeout=timeout)
                kind = message.get("type") if message is not None else None
                if message is not None and kind in ("message", "smessage"):
                    await self.apply(message["data"])
                elif kind == "sunsubscribe":  # the slot moved: its old node dropped us
                    raise RedisConnectionError(f"the subscription to {self.keys.control} "
                                               "was ended by Redis")
                if time.monotonic() >= next_sync:
                    await self.resync()
                    next_sync = time.monotonic() + RESYNC_INTERVAL_S

    async def apply(self, payload: bytes | str) -> None:
        """Apply one control message; a malformed one is logged and ignored."""
        try:
            action, ticker = decode_control(payload)
        except CodecError as e:
            # Anyone can publish on the channel: a line per MALFORMED_LOG_INTERVAL_S at most,
            # with the count so far, rather than a line per message.
            self.malformed += 1
            self._malformed_log.warning("ignoring a malformed control message: %s (%d so far)",
                                        e, self.malformed)
            return
        if action == "add":
            await self._add(ticker)
        else:
            await self._remove(ticker)

    async def resync(self) -> None:
        """Make the produced tickers equal the set (a missed control message heals here)."""
        members = await self._read()
        wanted = set(members)
        for ticker in [t for t in self.current if t not in wanted]:
            await self._remove(ticker)
        for ticker in members:
            await self._add(ticker)

    async def _add(self, ticker: str) -> None:
        if ticker in self.current:
            return
        if len(self.current) >= self.cap:
            self._warn_once(
                ticker, "watchlist is at its cap of %d; not producing %s", self.cap, ticker
            )
            return
        self.current[ticker] = None
        await self.on_add(ticker)
        log.info("producing %s", ticker)

    async def _remove(self, ticker: str) -> None:
        if ticker not in self.current:
            return
        del self.current[ticker]
        await self.on_remove(ticker)
        log.info("stopped producing %s", ticker)

    async def _read(self) -> list[str]:
        """The set's valid members, sorted, at most `cap` of them."""
        raw = await self.redis.smembers(self.keys.watchlist)
        members = []
        for item in raw:
            symbol = item.decode(errors="replace") if isinstance(item, bytes) else str(item)
            if is_valid_ticker(symbol):
                members.append(symbol)
            else:
                self._warn_once(symbol, "ignoring invalid symbol %r in the watchlist", symbol)
        members.sort()
        if len(members) > self.cap:
            self._warn_once("#cap", "watchlist holds %d tickers; producing the first %d",
                            len(members), self.cap)
        return members[: self.cap]

    def _warn_once(self, what: str, message: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message, *args)


def _now() -> str:
    return f"{time.time():.3f}"
