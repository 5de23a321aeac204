"""The load generator's HTTP/SSE parser: every update counted once, however reads split."""

from __future__ import annotations

import random

import orjson

from bench.sse_client import SseClient, Window, percentile_ms


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def event(seq: int, ts: float, tickers: list[str], sep: bytes) -> bytes:
    data = orjson.dumps({t: {"ticker": t, "timestamp": ts, "seq": seq} for t in tickers})
    return b"id: %d%sdata: %s%s%s" % (seq, sep, data, sep, sep)


def response(events: list[bytes], chunked: bool, sep: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    body = [b"retry: 1000" + sep + sep, b": ping" + sep + sep, *events]
    if not chunked:
        return head + b"\r\n" + b"".join(body)
    framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in body)
    return head + b"transfer-encoding: chunked\r\n\r\n" + framed


async def feed(raw: bytes, pieces: int, seed: int) -> tuple[SseClient, Window]:
    window = Window()
    window.start, window.end = 100.0, 200.0
    client = SseClient(b"GET / HTTP/1.1\r\n\r\n", window)
    client.connection_made(FakeTransport())  # type: ignore[arg-type]
    cuts = sorted(random.Random(seed).sample(range(1, len(raw)), pieces - 1))
    for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        client.data_received(raw[a:b])
    return client, window


async def test_updates_are_counted_once_whatever_the_read_boundaries() -> None:
    tickers = ["AAPL", "MSFT", "V"]
    for chunked in (True, False):
        for sep in (b"\r\n", b"\n"):
            # timestamps 99 (before the window), 150, 150, 250 (after): 6 updates inside
            events = [
                event(i, ts, tickers, sep) for i, ts in enumerate([99.0, 150.0, 150.0, 250.0])
            ]
            raw = response(events, chunked, sep)
            for seed, pieces in enumerate((1, 2, 7, 50, len(raw) // 3)):
                client, window = await feed(raw, pieces, seed)
                assert client.first_event.done() and client.error is None
                assert (client.events, client.in_window) == (4, 6), (chunked, sep, pieces)
                assert sum(window.hist) == 6


async def test_a_refused_stream_is_an_error_not_a_client() -> None:
    client, _ = await feed(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\n\r\n", 3, 1)
    assert client.error == "HTTP 503" and client.transport.closed  # type: ignore[union-attr]
    assert client.first_event.done() and client.events == 0


def test_percentiles_come_from_the_histogram_in_milliseconds() -> None:
    window = Window()
    window.start, window.end = 0.0, 10.0
    for i in range(100):  # latencies 1..100 ms
        window.record(((1.0, 1),), 1.0 + (i + 1) / 1000)
    assert 49 <= percentile_ms(window.hist, 0.5) <= 51  # type: ignore[operator]
    assert 98 <= percentile_ms(window.hist, 0.99) <= 100  # type: ignore[operator]
    assert percentile_ms(Window().hist, 0.5) is None
