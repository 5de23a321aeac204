"""Named stream events beside the prices: the price source's state and the watchlist.

A stream asks for them with ``?events=source,watchlist`` (the page does); a stream that
does not ask gets prices only, exactly as before. Each kind is conflated like prices:
a client holds at most the latest frame of each kind, sent before its next prices.

- ``event: source`` — ``{"source", "state", "feed", "reference", "detail", "last_trade"}``
  from ``NS:producer:status`` (``shared.status``), read every `SOURCE_POLL_S`; state
  ``no_producer`` when the heartbeat is gone. Sent when the stream opens and on a change.
- ``event: watchlist`` — ``{"tickers": [...]}``, sorted: sent when the stream opens and
  after every change on ``NS:control``, so every open tab follows an add or a removal at
  once (it polled every 15 s before: 11.8 s measured for a removal to reach another tab).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.hub import Hub
from gateway.stream.framing import notice_frame
from shared.keys import Keys
from shared.models import is_valid_ticker
from shared.status import problem

log = logging.getLogger(__name__)

KINDS: Final[frozenset[str]] = frozenset({"source", "watchlist"})
SOURCE_POLL_S: Final[float] = 1.0  # the producer rewrites its status every second
RETRY_S: Final[float] = 1.0
_SOURCE_FIELDS: Final = ("source", "state", "feed", "reference", "detail", "last_trade")


def source_view(heartbeat: bool, raw_status: bytes | None) -> dict[str, Any]:
    """What the page is told about the source, from the heartbeat and the raw status."""
    status: Any = None
    if raw_status is not None:
        try:
            status = orjson.loads(raw_status)
        except orjson.JSONDecodeError:
            status = None
    view: dict[str, Any] = dict.fromkeys(_SOURCE_FIELDS)
    if isinstance(status, dict):
        view.update({k: status.get(k) for k in _SOURCE_FIELDS})
    if not heartbeat and not (isinstance(status, dict) and problem(status) is not None):
        # No heartbeat and no problem reported: no producer. A lease holder whose source
        # gives nothing has no heartbeat either (it needs a landed tick), but its status
        # says why (README, the Redis contract).
        view["state"] = "no_producer"
    return view


class Notices:
    """Keeps the latest frame of each kind and marks changes on the hub's clients."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, hub: Hub) -> None:
        self.redis = redis
        self.keys = keys
        self.hub = hub
        self.frames: dict[str, bytes] = {}
        self._source: dict[str, Any] | None = None
        self._tickers: list[str] | None = None
        self._watchlist_due = asyncio.Event()
        self._watchlist_due.set()  # read it once at start

    def watchlist_changed(self) -> None:
        """A control message arrived (or the subscription was re-established): re-read."""
        self._watchlist_due.set()

    async def follow_source(self) -> None:
        """Read the producer status every `SOURCE_POLL_S`; runs until cancelled."""
        while True:
            try:
                heartbeat, raw = await self.read_source()
            except (RedisError, OSError) as e:
                log.debug("cannot read the producer status: %s", e)
            else:
                view = source_view(heartbeat, raw)
                if view != self._source:
                    self._source = view
                    self._set("source", view)
            await asyncio.sleep(SOURCE_POLL_S)

    async def follow_watchlist(self) -> None:
        """Re-read ``NS:watchlist`` after each change; runs until cancelled."""
        while True:
            await self._watchlist_due.wait()
            self._watchlist_due.clear()
            try:
                members = await self.read_members()
            except (RedisError, OSError) as e:
                log.debug("cannot read the watchlist: %s", e)
                await asyncio.sleep(RETRY_S)
                self._watchlist_due.set()
                continue
            names = (m.decode(errors="replace") if isinstance(m, bytes) else str(m)
                     for m in members)
            tickers = sorted(t for t in names if is_valid_ticker(t))
            if tickers != self._tickers:
                self._tickers = tickers
                self._set("watchlist", {"tickers": tickers}, self._watchlist_for)

    async def read_source(self) -> tuple[bool, bytes | None]:
        """The producer's heartbeat (present or not) and its raw status."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.producer)
            pipe.get(self.keys.producer_status)
            heartbeat, raw = await pipe.execute()
        return bool(heartbeat), raw

    async def read_members(self) -> set[Any]:
        """The raw members of the watchlist."""
        members: set[Any] = await self.redis.smembers(self.keys.watchlist)
        return members

    def frame_for(self, kind: str, entitled: frozenset[str] | None) -> bytes | None:
        """The latest frame of ``kind`` as a client entitled to ``entitled`` may see it."""
        if kind == "watchlist" and entitled is not None and self._tickers is not None:
            return self._watchlist_for(entitled)
        return self.frames.get(kind)

    def _watchlist_for(self, entitled: frozenset[str]) -> bytes:
        """The watchlist cut to an access token's tickers (docs/ACCESS.md)."""
        tickers = [t for t in self._tickers or () if t in entitled]
        return notice_frame("watchlist", {"tickers": tickers})

    def _set(self, kind: str, payload: Any,
             narrow: Callable[[frozenset[str]], bytes] | None = None) -> None:
        data = notice_frame(kind, payload)
        self.frames[kind] = data
        self.hub.notify(kind, data, narrow)
