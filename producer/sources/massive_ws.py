"""Streaming trades from Massive's websocket feed (paid plans) through the SDK.

`MassiveStreamSource` runs the SDK's `WebSocketClient` on ``T.<TICKER>`` and conflates
trades into one quote per ticker per tick. Around the SDK it adds what the SDK does not
do (docs/RELIABILITY.md): reconnect after a clean close (its `connect` just returns), resubscribe
the current watchlist on every new connection, survive a malformed frame, and stop with
one clear line when the key is rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from massive import WebSocketClient
from massive.exceptions import AuthError
from massive.websocket.models import EquityTrade, Feed

from producer.sources.base import MassiveSource, Quote, QuoteSink
from producer.sources.massive_api import to_seconds
from shared.backoff import Backoff
from shared.settings import Settings
from shared.status import QUIET_AFTER_S

log = logging.getLogger(__name__)

# websockets logs every frame at DEBUG, the auth frame (which holds the key) included;
# its connection logs go to this logger, which never goes below INFO.
_WIRE_LOG = logging.getLogger(f"{__name__}.wire")
_WIRE_LOG.setLevel(logging.INFO)

_OK_STATUSES = frozenset({"connected", "auth_success", "success"})
# websockets retries a failed connect inside the SDK's `connect` and logs each attempt at
# INFO: a dead feed was silent under `pricefeed up`. One WARNING per this many seconds.
CONNECT_WARNING_EVERY_S = 60.0


class _ConnectFailures(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger handed to websockets: its "connect failed" lines go to ``on_failure``."""

    def __init__(self, on_failure: Callable[[str], None]) -> None:
        super().__init__(_WIRE_LOG, {})
        self._on_failure = on_failure

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith("connect failed"):
            self._on_failure(str(args[-1]) if args else "")
            return
        super().log(level, msg, *args, **kwargs)

ClientFactory = Callable[[list[str]], WebSocketClient]


def feed_of(ws_url: str | None) -> tuple[str, bool]:
    """The SDK's ``feed`` (host[:port][/path]) and ``secure`` for PRICEFEED_MASSIVE_WS_URL."""
    if not ws_url:
        return Feed.RealTime.value, True
    parts = urlsplit(ws_url)
    return parts.netloc + parts.path.rstrip("/"), parts.scheme == "wss"


class MassiveStreamSource(MassiveSource):
    """Trades from the websocket, at most one quote per ticker per ``tick_interval_s``."""

    reference = "first trade of the UTC day"

    def __init__(self, client_factory: ClientFactory, sink: QuoteSink, *,
                 tick_interval_s: float, reconnect_backoff: Backoff | None = None,
                 connect_grace_s: float = 10.0) -> None:
        super().__init__(sink)
        self._client_factory = client_factory
        self._tick_interval_s = tick_interval_s
        self._backoff = reconnect_backoff or Backoff(initial_s=0.5, cap_s=30.0)
        self._connect_grace_s = connect_grace_s
        self._pending: dict[str, Quote] = {}
        self._client: WebSocketClient | None = None
        self._connecting_since = time.monotonic()
        self._reported: set[str] = set()
        self._wire_log = _ConnectFailures(self._connect_failed)
        self._failures = 0  # failed connects since the last WARNING about them
        self._warned_at: float | None = None
        self._since = time.time()  # the stream's start, for a market quiet since then
        self.feed = "real time"

    @property
    def kind(self) -> str:
        return "massive-websocket"

    def _run(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._stream(), name="massive-ws-stream"),
                asyncio.create_task(self._flush(), name="massive-ws-flush")]

    async def add_ticker(self, ticker: str, last_price: float | None = None) -> None:
        """Subscribe ``T.<ticker>``; the SDK sends it within about a second."""
        self._tickers[ticker] = None
        if self._client is not None:
            self._client.subscribe(f"T.{ticker}")

    async def remove_ticker(self, ticker: str) -> None:
        self._tickers.pop(ticker, None)
        self._pending.pop(ticker, None)
        if self._client is not None:
            self._client.unsubscribe(f"T.{ticker}")

    async def _stream(self) -> None:
        """Connect, run the SDK until the connection ends, back off, connect again."""
        while True:
            client = self._client_factory([f"T.{t}" for t in self._tickers])
            self._client = client
            self._set_connecting()
            try:
                await client.connect(self._on_message, logger=self._wire_log)
                ending = "closed by the server"
            except AuthError:
                self._state = "auth_rejected"
                self._detail = "the API key was rejected on the websocket"
                log.error("Massive rejected the API key on the websocket; streaming stopped "
                          "(check MASSIVE_API_KEY and that the plan includes websockets)")
                return
            except Exception as e:
                ending = f"lost ({type(e).__name__})"
            finally:
                await _close(client)
            delay = self._backoff.next_delay()
            self._problem(f"Massive websocket {ending}; reconnecting in {delay:.1f} s",
                          key=f"ending:{ending}")
            await asyncio.sleep(delay)

    def _set_connecting(self) -> None:
        if self._state != "connecting":
            self._connecting_since = time.monotonic()
        self._state = "connecting"

    def _connect_failed(self, reason: str) -> None:
        """websockets could not connect and retries: the feed is unreachable. One WARNING
        at the first failure, then at most one per `CONNECT_WARNING_EVERY_S` with a count."""
        self._state = "unreachable"
        self._detail = f"cannot connect to the Massive websocket ({reason[:120]})"
        self._failures += 1
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < CONNECT_WARNING_EVERY_S:
            return
        again = "" if self._warned_at is None else f" ({self._failures} attempts failed)"
        log.warning("%s; retrying%s", self._detail, again)
        self._warned_at, self._failures = now, 0

    async def _on_message(self, raw: str | bytes) -> None:
        """Every frame after a successful auth (the SDK runs in raw mode). Never raises:
        the SDK would drop the connection for it."""
        if self._state not in ("ok", "market_closed"):
            if self._warned_at is not None:
                log.info("connected to the Massive websocket again")
            self._state = "ok"
            self._detail, self._warned_at, self._failures = None, None, 0
            self._backoff.reset()
            self._reported = {r for r in self._reported if not r.startswith("ending:")}
            log.info("Massive websocket streaming %d tickers", len(self._tickers))
        try:
            messages = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._problem("Massive websocket sent a frame that is not JSON; skipped it")
            return
        for message in messages if isinstance(messages, list) else [messages]:
            self._take(message)

    def _take(self, message: Any) -> None:
        if not isinstance(message, dict):
            self._problem("Massive websocket sent a message that is not an object; skipped")
            return
        event = message.get("ev")
        if event == "T":
            self._take_trade(EquityTrade.from_dict(message))
        elif event == "status" and message.get("status") not in _OK_STATUSES:
            self._problem(f"Massive websocket status {str(message.get('status'))[:40]}: "
                          f"{str(message.get('message'))[:200]}")

    def _take_trade(self, trade: EquityTrade) -> None:
        symbol = trade.symbol
        if not isinstance(symbol, str) or symbol not in self._tickers:
            return
        timestamp = to_seconds(trade.timestamp)
        price = trade.price
        if (timestamp is None or isinstance(price, bool) or not isinstance(price, int | float)
                or not 0 < price < float("inf")):
            self._problem(f"Massive websocket sent a malformed trade for {symbol}; skipped")
            return
        size = trade.size if isinstance(trade.size, int | float) and trade.size >= 0 else None
        held = self._pending.get(symbol)
        # The bars' volume is every trade's size, even of trades the tick conflates away.
        total = size if held is None else _add(held.size, size)
        if held is None or timestamp >= held.timestamp:  # trades may arrive out of order
            self._pending[symbol] = Quote(float(price), timestamp, total)
        else:
            self._pending[symbol] = Quote(held.price, held.timestamp, total)
        if self._last_trade is None or timestamp > self._last_trade:
            self._last_trade = timestamp

    async def _flush(self) -> None:
        """Every tick, send the latest trade of each ticker that traded."""
        while True:
            await asyncio.sleep(self._tick_interval_s)
            if (self._state == "connecting"
                    and time.monotonic() - self._connecting_since > self._connect_grace_s):
                self._state = "unreachable"
                self._detail = "no answer from the Massive websocket"
            self._check_quiet()
            batch = {t: q for t, q in self._pending.items() if t in self._tickers}
            self._pending = {}
            if not batch:
                continue
            try:
                await self._sink(batch)
            except Exception:
                log.exception("publishing %d Massive trades failed; dropped them", len(batch))

    def _check_quiet(self) -> None:
        """Connected, but no trade for `QUIET_AFTER_S` (or none since the start): closed."""
        if self._state not in ("ok", "market_closed"):
            return
        newest = self._last_trade if self._last_trade is not None else self._since
        self._state = "market_closed" if time.time() - newest > QUIET_AFTER_S else "ok"

    def _problem(self, line: str, key: str | None = None) -> None:
        """Log ``line`` once per kind of problem (``key``), then only at DEBUG."""
        key = key or line
        if key in self._reported:
            log.debug("%s", line)
            return
        self._reported.add(key)
        log.warning("%s", line)


def _add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else a + b


async def _close(client: WebSocketClient) -> None:
    if client.websocket is not None:
        with contextlib.suppress(Exception):
            await client.close()


def create_ws_source(settings: Settings, sink: QuoteSink) -> MassiveStreamSource:
    """The websocket source for ``settings`` (key, PRICEFEED_MASSIVE_WS_URL, tick)."""
    feed, secure = feed_of(settings.massive_ws_url)
    key = settings.massive_api_key

    def client(subscriptions: list[str]) -> WebSocketClient:
        # max_reconnects=0: every lost connection comes back to `_stream`, which
        # resubscribes the current watchlist and logs it; raw: see `_on_message`
        return WebSocketClient(api_key=key.get(), feed=feed, secure=secure, market="stocks",
                               raw=True, subscriptions=subscriptions, max_reconnects=0)

    source = MassiveStreamSource(client, sink, tick_interval_s=settings.tick_interval_s)
    source.feed = "delayed 15 min" if feed.startswith("delayed") else "real time"
    return source
