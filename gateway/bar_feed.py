"""``event: bar`` for SSE streams that ask for ``?bars=1s|1m``: every close, as published
on ``NS:bars:{1s|1m}``, and the forming bars once a second, read from ``NS:forming:*``.

Its own subscription, so the price subscription (`gateway.price_feed`) stays as it is; a
Redis failure rebuilds it with capped backoff. A lost close is not replayed: a chart that
reconnects backfills from ``GET /api/bars`` (README "Bars").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.hub import Hub
from gateway.stream.framing import bar_frame
from shared.backoff import Backoff
from shared.bars import INTERVALS, bar_from_obj, encode_bar, with_partial
from shared.errors import CodecError
from shared.keys import Keys
from shared.logs import LogThrottle

log = logging.getLogger(__name__)

FORMING_EVERY_S = 1.0  # the forming bar reaches a stream at most once a second


class BarFeed:
    """Feeds the hub's bar streams."""

    def __init__(self, keys: Keys, hub: Hub, connect: Callable[[], aioredis.Redis],
                 reader: aioredis.Redis) -> None:
        self.keys = keys
        self.hub = hub
        self.connect = connect
        self.reader = reader
        self._channels = {keys.bar_channel(name): name for name in INTERVALS}
        self._backoff = Backoff(initial_s=0.1, cap_s=2.0)
        self._bad = LogThrottle(log, 10.0)

    async def run(self) -> None:
        """Subscribe and feed until cancelled; resubscribe after a Redis failure."""
        failed = False
        while True:
            try:
                await self._session()
            except (RedisError, OSError) as e:
                if not failed:
                    log.warning("bar subscription lost (%s: %s); retrying", type(e).__name__, e)
                failed = True
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self) -> None:
        client = self.connect()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        loop = asyncio.get_running_loop()
        try:
            await pubsub.subscribe(*self._channels)
            self._backoff.reset()
            next_forming = loop.time() + FORMING_EVERY_S
            while True:
                timeout = max(0.0, next_forming - loop.time())
                message = await pubsub.get_message(timeout=timeout)
                if message is not None and message.get("type") == "message":
                    self.on_close(message["channel"], message["data"])
                if loop.time() >= next_forming:
                    next_forming = loop.time() + FORMING_EVERY_S
                    await self.send_forming()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    def on_close(self, channel: bytes | str, payload: bytes) -> None:
        """One close message ``{TICKER: bar}`` to the streams of its interval."""
        name = channel.decode() if isinstance(channel, bytes) else channel
        interval = self._channels.get(name)
        if interval is None or interval not in self.hub.bar_wanted():
            return
        try:
            obj = orjson.loads(payload)
            if not isinstance(obj, dict):
                raise CodecError("a bar message must be an object keyed by ticker")
            bars = {t: with_partial(encode_bar(bar_from_obj(b)), False) for t, b in obj.items()
                    if isinstance(t, str)}
        except (orjson.JSONDecodeError, CodecError) as e:
            self._bad.warning("skipping a malformed message on %s: %s", name, e)
            return
        self.hub.publish_bars(interval, bars, bar_frame)

    async def send_forming(self) -> None:
        """The forming bars of every interval some stream wants, once."""
        for interval, tickers in self.hub.bar_wanted().items():
            key = self.keys.forming(interval)
            raw: dict[Any, Any]
            if tickers is None:
                raw = await self.reader.hgetall(key)
            else:
                wanted = sorted(tickers)
                raw = dict(zip(wanted, await self.reader.hmget(key, wanted), strict=True))
            bars = self.forming_bars(raw)
            if bars:
                self.hub.publish_bars(interval, bars, bar_frame)

    def forming_bars(self, raw: dict[Any, Any]) -> dict[str, bytes]:
        """The valid forming bars among ``raw`` (ticker -> stored JSON or None), with
        ``"partial": true``; a malformed one is logged (throttled) and left out."""
        bars = {}
        for field, value in raw.items():
            ticker = field.decode() if isinstance(field, bytes) else field
            if value is None:
                continue
            try:
                bars[ticker] = with_partial(encode_bar(bar_from_obj(orjson.loads(value))), True)
            except (orjson.JSONDecodeError, CodecError) as e:
                self._bad.warning("skipping the malformed forming bar of %s: %s",
                                  ticker[:20], e)
        return bars
