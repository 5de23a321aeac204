"""Load scenarios 5, 6 and 7a of docs/RELIABILITY.md against the real gateway process, with
the raw clients of bench/ (bench.sse_client.SseClient, bench.sse_loadgen.open_batch)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import time

import pytest

from bench.sse_client import SseClient, Window, percentile_ms
from bench.sse_loadgen import close_all, open_batch
from tests.helpers.poll import wait_until
from tests.helpers.support import free_port
from tests.helpers.system import metrics, rss_mb, status, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]
FIGURES: dict[str, dict[str, object]] = {}
READERS = STALLED = 50
BASELINE_S, LOADED_S = 10.0, 30.0
CHURN_CYCLES, CHURN_PARALLEL = 5_000, 50
STREAMS = 1_000
BUSY = {"PRICEFEED_TICKERS": ",".join(f"T{i:02d}" for i in range(20)),
        "PRICEFEED_TICK_INTERVAL": "0.1"}


def _request(port: int) -> bytes:
    return (f"GET /api/stream/prices HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n").encode()


def _stalled(port: int) -> socket.socket:
    """A client that asks for a stream and never reads (receive buffer as small as allowed)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(_request(port))
    return sock


async def _window(window: Window, seconds: float) -> float | None:
    window.hist = [0] * len(window.hist)
    window.start = time.time()
    window.end = window.start + seconds
    await asyncio.sleep(seconds + 0.5)  # updates stamped at the end, still in flight
    return percentile_ms(window.hist, 0.99)


async def test_slow_readers_do_not_delay_readers_and_are_dropped(redis_url):
    with system(redis_url, **BUSY) as sys:
        port, url, gw = sys.ports[0], sys.urls[0], sys.gateways[0]
        window = Window()
        readers = await open_batch("127.0.0.1", port, _request(port), window, READERS, 15)
        assert all(c.error is None for c in readers), [c.error for c in readers][:3]
        try:
            alone = await _window(window, BASELINE_S)
            rss_before = rss_mb(gw.proc.pid)
            stalled = [_stalled(port) for _ in range(STALLED)]
            await wait_until(lambda: metrics(url)["pricefeed_gateway_open_streams"] == 100, 10,
                             "the stalled clients connected")
            samples: list[float] = []

            async def sample() -> None:
                while True:
                    samples.append(rss_mb(gw.proc.pid))
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample())
            loaded = await _window(window, LOADED_S)
            sampler.cancel()
            after = metrics(url)
            for sock in stalled:
                sock.close()
            assert not any(c.closed for c in readers), "a reader was dropped"
        finally:
            close_all(readers)
    assert alone is not None and loaded is not None
    assert after["pricefeed_gateway_clients_dropped_slow_total"] >= STALLED
    assert after["pricefeed_gateway_open_streams"] == READERS
    growth = max(samples) - rss_before
    assert growth < 40, (rss_before, samples)
    # A gateway that waited on a stalled client would hold every reader for up to the send
    # timeout (5 s) per stalled client. What the readers may see instead is scheduling
    # noise: p99 was 4-18 ms alone and with the stalled clients on this 2-core machine,
    # quiet and beside two CPU burners (docs/RELIABILITY.md), and a ratio of the two
    # reached 2.4x on a busy run with no stall at all. So the bound is absolute: a tenth
    # of one send timeout, still 25x the worst p99 measured.
    assert loaded < 500, (alone, loaded)
    FIGURES["slow_readers"] = {"p99_alone_ms": alone, "p99_with_stalled_ms": loaded,
                               "rss_before_mb": rss_before, "rss_max_mb": max(samples),
                               "dropped": after["pricefeed_gateway_clients_dropped_slow_total"]}


async def _cycle(port: int, i: int) -> None:
    """One connect/disconnect: read the first event, or cut it at some other point."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = _request(port)
        if i % 4 == 3:  # cut mid-request
            writer.write(request[:20])
            await writer.drain()
            return
        writer.write(request)
        if i % 4 == 0:  # the whole first event (retry line, then the snapshot)
            await reader.readuntil(b"data:")
            await reader.readuntil(b"\r\n\r\n")
        elif i % 4 == 1:  # cut after the headers
            await reader.readuntil(b"\r\n\r\n")
        else:  # cut mid-stream with a reset rather than a FIN
            await reader.read(10)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _counts(url: str) -> dict[str, float]:
    m = metrics(url)
    return {k: m[f"pricefeed_gateway_{k}"] for k in
            ("open_streams", "hub_subscriptions", "background_tasks", "asyncio_tasks",
             "open_fds")}


async def test_churn_leaks_no_task_subscription_descriptor_or_memory(redis_url):
    with system(redis_url, **BUSY) as sys:
        port, url, gw = sys.ports[0], sys.urls[0], sys.gateways[0]

        async def churn(n: int) -> None:
            sem = asyncio.Semaphore(CHURN_PARALLEL)

            async def one(i: int) -> None:
                async with sem:
                    await _cycle(port, i)

            await asyncio.gather(*(one(i) for i in range(n)))

        await churn(200)  # warm up: first-use allocations are not a leak
        await wait_until(lambda: _counts(url)["open_streams"] == 0, 10, "warm-up streams ended")
        before, rss_before = _counts(url), rss_mb(gw.proc.pid)
        started = time.monotonic()
        await churn(CHURN_CYCLES)
        took = time.monotonic() - started
        # The gateway closes what the churn left: every count goes back to before.
        # Polled every 0.1 s: each probe is itself a request, with a task and a descriptor.
        try:
            await wait_until(lambda: _counts(url) == before, 10, "the counts back to before",
                             interval_s=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}: before {before}, now {_counts(url)}") from None
        settled = _counts(url)
        rss_after = rss_mb(gw.proc.pid)
        served = metrics(url)["pricefeed_gateway_streams_opened_total"]
        assert gw.alive()
    assert rss_after <= rss_before * 1.10, (rss_before, rss_after)
    assert served == (200 + CHURN_CYCLES) * 3 / 4  # a request cut midway opens none
    FIGURES["churn"] = {"cycles": CHURN_CYCLES, "seconds": took, "counts": settled,
                        "rss_before_mb": rss_before, "rss_after_mb": rss_after}


async def test_sigterm_with_1000_open_streams_exits_within_2s(redis_url):
    with system(redis_url, gateways=0) as sys:
        port = free_port()
        gw = sys.start_gateway(port=port)
        url = sys.urls[0]
        await wait_until(lambda: status(url, "/api/ready") == 200, 20, "gateway ready")
        window = Window()
        clients: list[SseClient] = []
        for _ in range(STREAMS // 250):
            clients += await open_batch("127.0.0.1", port, _request(port), window, 250, 20)
        try:
            assert sum(c.error is None for c in clients) == STREAMS
            assert metrics(url)["pricefeed_gateway_open_streams"] == STREAMS
            started = time.monotonic()
            gw.signal(signal.SIGTERM)
            rc = await asyncio.to_thread(gw.proc.wait, 10)
            took = time.monotonic() - started
            await wait_until(lambda: all(c.closed for c in clients), 5, "every stream closed")
        finally:
            close_all(clients)
    assert rc == 0
    assert took < 2.0, took
    FIGURES["shutdown_1000"] = {"streams": STREAMS, "exit_s": took}
