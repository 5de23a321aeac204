"""Local stand-ins for Massive: an HTTP snapshot server and a websocket feed.

They speak the real wire formats (JSON field names and units as the API documents), so
the real SDK talks to them unmodified through its base URL / feed arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

# Recognisable, so a leak into any output is easy to find (and to assert against).
API_KEY = "pk_SECRET_massive_test_key_6f1d2c"
SNAPSHOT_PATH = "/v2/snapshot/locale/us/markets/stocks/tickers"
AGGS_PREFIX = "/v2/aggs/ticker/"


def snapshot_entry(ticker: str, price: float, trade_ns: int | None, *,
                   updated: int | None = None, last_trade: Any = ...) -> dict[str, Any]:
    """One element of ``tickers`` shaped like the real v2 snapshot answer."""
    entry: dict[str, Any] = {
        "ticker": ticker,
        "todaysChange": 1.25, "todaysChangePerc": 0.66,
        "updated": updated if updated is not None else (trade_ns or 1_700_000_000_000_000_000),
        "day": {"o": price - 1, "h": price + 2, "l": price - 2, "c": price, "v": 51_234_567,
                "vw": price - 0.3},
        "prevDay": {"o": price - 3, "h": price, "l": price - 4, "c": price - 1.25,
                    "v": 48_000_000, "vw": price - 2},
        "min": {"av": 51_234_567, "o": price, "h": price, "l": price, "c": price, "v": 1200,
                "vw": price, "t": 1_700_000_000_000},
        "lastQuote": {"P": price + 0.02, "S": 3, "p": price - 0.02, "s": 2,
                      "t": trade_ns or 1_700_000_000_000_000_000},
    }
    if last_trade is ...:
        trade: dict[str, Any] = {"c": [14, 41], "i": "71675577320245", "p": price, "s": 100,
                                 "x": 4}
        if trade_ns is not None:
            trade["t"] = trade_ns
        entry["lastTrade"] = trade
    elif last_trade is not None:
        entry["lastTrade"] = last_trade
    return entry


@dataclass
class Reply:
    """A scripted answer served instead of the snapshot."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class SeenRequest:
    at: float
    path: str
    tickers: list[str]
    authorization: str | None


class FakeMassiveHTTP:
    """A threaded HTTP server answering the v2 snapshot like api.massive.com."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.aggs: dict[str, list[dict[str, Any]]] = {}  # ticker -> 1 min aggregates
        self.script: deque[Reply] = deque()
        self.requests: list[SeenRequest] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeMassiveHTTP:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def serve(self, *entries: dict[str, Any]) -> None:
        """Replace the served snapshot entries of these tickers."""
        with self.lock:
            for entry in entries:
                self.entries[entry["ticker"]] = entry

    def then(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order, before the snapshot again."""
        with self.lock:
            self.script.extend(replies)

    def seen(self) -> list[SeenRequest]:
        with self.lock:
            return list(self.requests)

    def answer(self, path: str, query: str, authorization: str | None) -> Reply:
        tickers = [t for t in parse_qs(query).get("tickers", [""])[0].split(",") if t]
        with self.lock:
            self.requests.append(SeenRequest(time.monotonic(), path, tickers, authorization))
            if self.script:
                return self.script.popleft()
            if path != SNAPSHOT_PATH and not path.startswith(AGGS_PREFIX):
                return _json_reply(404, {"status": "NOT_FOUND", "message": "no such path"})
            if authorization != f"Bearer {API_KEY}":
                return _json_reply(401, {"status": "ERROR", "error": "Unknown API Key"})
            if path.startswith(AGGS_PREFIX):
                return self._aggs(path)
            found = [self.entries[t] for t in tickers if t in self.entries]
        return _json_reply(200, {"status": "OK", "count": len(found), "tickers": found})


    def _aggs(self, path: str) -> Reply:
        """``/v2/aggs/ticker/{T}/range/1/minute/{from_ms}/{to_ms}`` like the real API."""
        parts = path[len(AGGS_PREFIX):].split("/")
        if len(parts) != 6 or parts[1:4] != ["range", "1", "minute"]:
            return _json_reply(400, {"status": "ERROR", "error": "bad aggregates request"})
        ticker, start, end = parts[0], int(parts[4]), int(parts[5])
        results = [a for a in self.aggs.get(ticker, []) if start <= a["t"] <= end]
        return _json_reply(200, {"ticker": ticker, "queryCount": len(results),
                                 "resultsCount": len(results), "adjusted": True,
                                 "results": results, "status": "OK", "request_id": "r2"})


def agg(t_ms: int, price: float, volume: float = 1200.0, trades: int = 17) -> dict[str, Any]:
    """One element of ``results`` of the aggregates answer (``t`` in ms, as the API sends)."""
    return {"v": volume, "vw": price + 0.01, "o": price, "c": price + 0.05, "h": price + 0.1,
            "l": price - 0.1, "t": t_ms, "n": trades}


def forbidden() -> Reply:
    return _json_reply(403, {"status": "NOT_AUTHORIZED", "request_id": "r3",
                             "message": "You are not entitled to this data."})


def _json_reply(status: int, document: Any) -> Reply:
    return Reply(status, json.dumps(document).encode())


def unauthorized() -> Reply:
    return _json_reply(401, {"status": "ERROR", "request_id": "r1", "error": "Unknown API Key"})


def rate_limited(retry_after: str) -> Reply:
    body = {"status": "ERROR", "error": "You've exceeded the maximum requests per minute"}
    reply = _json_reply(429, body)
    reply.headers["Retry-After"] = retry_after
    return reply


def server_error() -> Reply:
    return _json_reply(500, {"status": "ERROR", "error": "internal"})


def malformed() -> Reply:
    return Reply(200, b'{"status": "OK", "tickers": [{"ticker": "AAPL", ')


def _handler_for(fake: FakeMassiveHTTP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            reply = fake.answer(parts.path, parts.query, self.headers.get("Authorization"))
            if reply.delay_s:
                time.sleep(reply.delay_s)
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


def trade(symbol: str, price: Any, t_ms: Any) -> dict[str, Any]:
    """A websocket trade message (``ev: T``; ``t`` in milliseconds, as the feed sends)."""
    return {"ev": "T", "sym": symbol, "i": "52983525029461", "x": 4, "p": price, "s": 100,
            "c": [12, 37], "t": t_ms, "q": 1063, "z": 3}


def _status(status: str, message: str) -> str:
    return json.dumps([{"ev": "status", "status": status, "message": message}])


_SERVER_LOG = logging.getLogger("tests.helpers.massive.fake_ws")
_SERVER_LOG.setLevel(logging.INFO)  # websockets would log the auth frame (the key) at DEBUG


class FakeMassiveWS:
    """A websocket feed speaking Massive's protocol on ``ws://127.0.0.1:<port>/stocks``."""

    def __init__(self, accept_key: str = API_KEY) -> None:
        self.accept_key = accept_key
        self.connections: list[ServerConnection] = []
        self.paths: list[str] = []
        self.subscribed: set[str] = set()
        self.actions: list[tuple[str, str]] = []
        self._changed = asyncio.Condition()
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> FakeMassiveWS:
        self._server = await serve(self._handle, "127.0.0.1", 0, logger=_SERVER_LOG)
        return self

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    async def _note(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def send(self, *messages: Any, raw: str | None = None) -> None:
        """Send to the newest connection: a list of messages, or a raw text frame."""
        await self.connections[-1].send(raw if raw is not None else json.dumps(list(messages)))

    async def close_clients(self) -> None:
        """Close every connection cleanly (code 1000), as a server restart would."""
        for connection in self.connections:
            await connection.close(1000, "bye")

    async def _handle(self, connection: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._converse(connection)
        await self._note()

    async def _converse(self, connection: ServerConnection) -> None:
        self.connections.append(connection)
        self.paths.append(connection.request.path if connection.request else "")
        self.subscribed = set()
        await connection.send(_status("connected", "Connected Successfully"))
        auth = json.loads(await connection.recv())
        if auth.get("action") != "auth" or auth.get("params") != self.accept_key:
            await connection.send(_status("auth_failed", "authentication failed"))
            await connection.close(1008, "auth failed")
            return
        await connection.send(_status("auth_success", "authenticated"))
        await self._note()
        async for frame in connection:
            await self._act(connection, json.loads(frame))

    async def _act(self, connection: ServerConnection, request: dict[str, Any]) -> None:
        action, topics = request["action"], [t for t in request["params"].split(",") if t]
        for topic in topics:
            self.actions.append((action, topic))
            if action == "subscribe":
                self.subscribed.add(topic)
                await connection.send(_status("success", f"subscribed to: {topic}"))
            elif action == "unsubscribe":
                self.subscribed.discard(topic)
                await connection.send(_status("success", f"unsubscribed to: {topic}"))
        await self._note()
