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
    """The measurement window and everything counted in it (shared by all clients).

    Parsing is memoized on the exact ``data`` bytes: a fan-out gateway sends the same
    bytes to every client, and parsing them once per distinct payload instead of once per
    client keeps this process off the critical path (the result is identical).
    """

    def __init__(self) -> None:
        self.start = math.inf
        self.end = math.inf
        self.hist = [0] * (MAX_BUCKET + 1)
        self._parsed: dict[bytes, tuple[tuple[float, int], ...]] = {}

    def parse(self, data: bytes) -> tuple[tuple[float, int], ...]:
        """``(timestamp, how many updates carry it)`` of one event's data; raises on junk."""
        groups = self._parsed.get(data)
        if groups is None:
            counts: dict[float, int] = {}
            for ts in extract_timestamps(data):
                counts[ts] = counts.get(ts, 0) + 1
            groups = tuple(counts.items())
            if len(self._parsed) >= 256:  # recent payloads only: ticks move on
                self._parsed.clear()
            self._parsed[data] = groups
        return groups

    def record(self, groups: tuple[tuple[float, int], ...], now: float) -> int:
        """Histogram the latency of each update inside the window; how many were inside."""
        start, end, hist, inside = self.start, self.end, self.hist, 0
        for ts, n in groups:
            if start <= ts < end:
                inside += n
                b = int((now - ts) * BUCKETS_PER_S)
                hist[b if 0 <= b < MAX_BUCKET else (0 if b < 0 else MAX_BUCKET)] += n
        return inside


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
        transport.write(self.request)  # type: ignore[attr-defined]

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
        if not self._cbuf and self._chunk_left == 0:  # fast path: exactly one whole chunk
            eol = data.find(b"\r\n")
            if 0 < eol < 10 and data.endswith(b"\r\n"):
                size = int(data[:eol].split(b";")[0], 16)
                if size and eol + 2 + size + 2 == len(data):
                    return [data[eol + 2 : -2]]
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
        if self._sbuf:  # the rest of an event cut by a read boundary
            self._sbuf += payload
            payload = bytes(self._sbuf)
            self._sbuf.clear()
        if not self._sep:
            if b"\n" not in payload:
                self._sbuf += payload
                return
            self._sep = b"\r\n" if b"\r\n" in payload else b"\n"
        mark = self._sep + self._sep
        pos, step = 0, len(mark)
        while (end := payload.find(mark, pos)) >= 0:  # indices, not splits: no copies
            self._event(payload, pos, end, now)
            pos = end + step
        if pos < len(payload):
            self._sbuf += payload[pos:]

    def _data(self, payload: bytes, start: int, end: int) -> bytes | None:
        """The joined ``data:`` lines of the event in ``payload[start:end]``; None if none."""
        sep, parts = self._sep, []
        i = start
        while (i := payload.find(b"data:", i, end)) >= 0:
            if i == start or payload[i - len(sep) : i] == sep:  # at the start of a line
                j = payload.find(sep, i, end)
                j = end if j < 0 else j
                k = i + 6 if payload[i + 5 : i + 6] == b" " else i + 5
                parts.append(payload[k:j])
                i = j
            else:
                i += 5
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b"\n".join(parts)

    def _event(self, payload: bytes, start: int, end: int, now: float) -> None:
        data = self._data(payload, start, end)
        if data is None:
            return  # a comment (ping) or a retry line
        self.events += 1
        try:
            groups = self.window.parse(data)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            log.warning("unparsable event: %.80r", data)
            return
        self.in_window += self.window.record(groups, now)
        if not self.first_event.done():
            self.first_event.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
