"""Scenario 9: hostile tickers in paths, bodies and ``?tickers=`` are refused with a 4xx;
afterwards no Redis key or channel exists for them and no SSE frame was malformed."""

from __future__ import annotations

import asyncio
import re
import socket
from urllib.parse import quote

import httpx
import orjson
import pytest

from tests.helpers.poll import wait_until
from tests.helpers.system import TICKERS, check_frame, split_frames, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE = [
    "AA\r\nPL", "A\rB", "*", "A*", "?", "A?B", "[", "[A-Z]", "A B", " AAPL X",
    "A\x00B", "\x00", "ÄPPL", "日本", "ＡＡＰＬ", "A" * 10_240, "../AAPL", "../../etc/passwd",
    "..", "%0D%0A", "%2A", "AAPL%00", "%41%41PL%0A", "A/B", "A\\B", "A\tB", "{AAPL}",
    "A:B", "A'B", 'A"B', "<script>", "AAPLAAPLAAP",
]
# What a valid system holds in its Redis, and nothing more.
KEY_SUFFIXES = {"latest", "seq", "watchlist", "watchlist:created", "producer", "producer:lease",
                "producer:status", "ticks", "epoch"}
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _per_ticker_or_day(ns: str, key: str) -> bool:
    """A bar key (``NS:bars:<interval>[:<ticker>]``, ``NS:forming:...``) of a real ticker,
    or a day's reference hash (``NS:reference:<YYYY-MM-DD>``)."""
    parts = key.split(":")
    if parts[:2] == [ns, "forming"]:
        return True
    if parts[:2] == [ns, "reference"]:
        return len(parts) == 3 and DAY.fullmatch(parts[2]) is not None
    return parts[:2] == [ns, "bars"] and (len(parts) == 3 or parts[3:] in ([t] for t in TICKERS))


def _attempts(client: httpx.Client, bad: str) -> list[tuple[str, int]]:
    path = quote(bad, safe="")
    return [
        ("GET price", client.get(f"/api/prices/{path}").status_code),
        ("DELETE", client.delete(f"/api/watchlist/{path}", headers=AUTH).status_code),
        ("POST", client.post("/api/watchlist", json={"ticker": bad}, headers=AUTH).status_code),
        ("stream", _stream_status(client, bad)),
        ("stream+", _stream_status(client, f"AAPL,{bad}")),
    ]


def _stream_status(client: httpx.Client, tickers: str) -> int:
    with client.stream("GET", "/api/stream/prices", params={"tickers": tickers}) as response:
        return response.status_code


RAW_REQUESTS = [
    b"GET /api/prices/AA\r\nPL HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/prices/A\x00B HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/prices/A B HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/prices/\xc3\x84PPL HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/stream/prices?tickers=AA\rPL HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/stream/prices?tickers=%0D%0A HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/stream/prices?tickers=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE /api/watchlist/%2A HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode() + b"\r\n\r\n",
]


def _raw_status(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        head = sock.recv(4096)
    return int(head.split(b" ", 2)[1])


async def _read_frames(url: str, frames: list[bytes], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", url + "/api/stream/prices") as response:
            buffer = b""
            async for chunk in response.aiter_bytes():
                buffer += chunk
                whole, buffer = split_frames(buffer)
                frames.extend(whole)
                if stop.is_set():
                    return


async def test_hostile_tickers_are_refused_and_leave_no_trace(redis_server_factory):
    server = redis_server_factory()
    with system(server.url, PRICEFEED_API_TOKEN=TOKEN) as sys:
        url = sys.urls[0]
        frames: list[bytes] = []
        stop = asyncio.Event()
        reader = asyncio.create_task(_read_frames(url, frames, stop))

        def attack() -> list[tuple[str, str, int]]:
            with httpx.Client(base_url=url, timeout=10) as client:
                bad = [(b[:20], where, code) for b in HOSTILE
                       for where, code in _attempts(client, b) if not 400 <= code < 500]
            raw = [(r[:40].decode(errors="replace"), "raw", _raw_status(sys.ports[0], r))
                   for r in RAW_REQUESTS]
            return bad + [r for r in raw if not 400 <= r[2] < 500]

        assert await asyncio.to_thread(attack) == []
        await wait_until(lambda: len(frames) > 5 or reader.done(), what="frames")
        stop.set()
        await asyncio.wait_for(reader, 10)
        client = sys.redis()
        keys = {k.decode() for k in client.scan_iter(count=1000)}
        channels = {c.decode() for c in client.pubsub_channels()}
        watchlist = {m.decode() for m in client.smembers(sys.keys.watchlist)}
        latest = {f.decode() for f in client.hkeys(sys.keys.latest)}
        logged = {t for _, f in client.xrange(sys.keys.ticks) for t in orjson.loads(f[b"map"])}
    ns = sys.keys.namespace
    assert {k for k in keys if not _per_ticker_or_day(ns, k)} <= {
        f"{ns}:{s}" for s in KEY_SUFFIXES}, keys
    probes = {c for c in channels if re.fullmatch(rf"{re.escape(ns)}:probe:[0-9a-f]{{12}}", c)}
    assert len(probes) <= 1  # the one gateway's own delivery probe channel
    assert {c for c in channels if not _per_ticker_or_day(ns, c)} - probes <= {
        sys.keys.prices, sys.keys.control}, channels
    assert watchlist == latest == logged == set(TICKERS)
    assert len(frames) > 5
    data = [check_frame(f) for f in frames]
    assert all(set(d) <= set(TICKERS) for d in data if d is not None)
