"""One SSE client of the load generator, and the latency window all clients share.

A bare `asyncio.Protocol` speaking HTTP/1.1 (chunked or not) and SSE: no HTTP library per
connection, so one process holds 10,000 of them. Each update's latency is the receive time
of the bytes that completed its event minus the update's own ``timestamp``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import orjson

log = logging.getLogger("bench.loadgen")

BUCKETS_PER_S = 10_000  # latency histogram resolution: 0.1 ms
MAX_BUCKET = 60 * BUCKETS_PER_S  # latencies above 60 s land in the last bucket


class Window:
    """The measurement window and everything counted in it (shared by all clients)."""

    def __init__(self) -> None:
        self.start = math.inf
        self.end = math.inf
        self.hist = [0] * (MAX_BUCKET + 1)

    def record(self, timestamps: list[float], now: float) -> int:
        """Histogram the latency of each update inside the window; how many were inside."""
        start, end, hist, n = self.start, self.end, self.hist, 0
        for ts in timestamps:
            if start <= ts < end:
                n += 1
                b = int((now - ts) * BUCKETS_PER_S)
                hist[b if 0 <= b < MAX_BUCKET else (0 if b < 0 else MAX_BUCKET)] += 1
        return n


def percentile_ms(hist: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a latency histogram, in milliseconds."""
    total = sum(hist)
    if total == 0:
        return None
    rank, seen = q * (total - 1), 0
    for b, n in enumerate(hist):
        seen += n
        if seen > rank:
            return round((b + 0.5) * 1000 / BUCKETS_PER_S, 2)
    return None


def extract_timestamps(data: bytes) -> list[float]:
    """Timestamps of every PriceUpdate in one event's ``{TICKER: PriceUpdate}`` object."""
    obj = orjson.loads(data)
    return [u["timestamp"] for u in obj.values()]


class SseClient(asyncio.Protocol):
    """One SSE connection: HTTP/1.1 response, optional chunked framing, SSE events."""

    def __init__(self, request: bytes, window: Window) -> None:
        self.request, self.window = request, window
        self.transport: asyncio.Transport | None = None
        self.first_event: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.error: str | None = None
        self.closed = False
        self.in_window = 0  # updates with a timestamp inside the window
        self.events = 0
        self._head = bytearray()
        self._chunked: bool | None = None  # None until the headers are in
        self._cbuf = bytearray()
        self._chunk_left = 0
        self._sbuf = bytearray()
        self._sep = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"closed: {exc}" if exc else "closed by server")

    def _fail(self, reason: str) -> None:
        if self.error is None and not self.first_event.done():
            self.error = reason
        if not self.first_event.done():
            self.first_event.set_exception(ConnectionError(reason))
            self.first_event.exception()  # mark retrieved: the ramp reads self.error

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self._chunked is None:
            data = self._headers(data)
            if not data:
                return
        if self._chunked:
            for payload in self._dechunk(data):
                self._sse(payload, now)
        else:
            self._sse(data, now)

    def _headers(self, data: bytes) -> bytes:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = bytes(self._head[:end]).lower(), bytes(self._head[end + 4 :])
        self._head.clear()
        line = head.split(b"\r\n", 1)[0].split()
        self.status = int(line[1]) if len(line) > 1 and line[1].isdigit() else 0
        if self.status != 200:
            self._fail(f"HTTP {self.status}")
            assert self.transport is not None
            self.transport.close()
            return b""
        self._chunked = b"transfer-encoding: chunked" in head
        return rest

    def _dechunk(self, data: bytes) -> list[bytes]:
        buf, pos, out = self._cbuf, 0, []
        buf += data
        while True:
            if self._chunk_left == 0:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                line, pos = buf[pos:eol], eol + 2
                if line:  # an empty line is the CRLF closing the previous chunk
                    self._chunk_left = int(bytes(line).split(b";")[0], 16)
                    if self._chunk_left == 0:  # last chunk: the server ended the stream
                        break
                continue
            take = min(self._chunk_left, len(buf) - pos)
            if take <= 0:
                break
            out.append(bytes(buf[pos : pos + take]))
            pos += take
            self._chunk_left -= take
        del buf[:pos]
        return out

    def _sse(self, payload: bytes, now: float) -> None:
        sbuf = self._sbuf
        sbuf += payload
        if not self._sep:
            if b"\n" not in sbuf:
                return
            self._sep = b"\r\n" if b"\r\n" in sbuf else b"\n"
        sep = self._sep
        end = sbuf.rfind(sep + sep)
        if end < 0:
            return
        blocks = bytes(sbuf[:end]).split(sep + sep)
        del sbuf[: end + 2 * len(sep)]
        for block in blocks:
            self._event(block.split(sep), now)

    def _event(self, lines: list[bytes], now: float) -> None:
        data = [ln[5:].lstrip(b" ") for ln in lines if ln.startswith(b"data:")]
        if not data:
            return  # a comment (ping) or a retry line
        self.events += 1
        try:
            timestamps = extract_timestamps(b"\n".join(data))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            log.warning("unparsable event: %.80r", data)
            return
        self.in_window += self.window.record(timestamps, now)
        if not self.first_event.done():
            self.first_event.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
