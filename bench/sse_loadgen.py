"""SSE load generator: C concurrent connections, every event parsed, latency per update.

Run as its own process (the harness pins it with ``taskset``). It opens connections in
batches, waits for each client's first event, then measures one window: per update it
records ``receive time - update["timestamp"]`` and counts updates whose timestamp falls in
the window, per client. A direct Redis subscriber to ``NS:prices`` counts what was offered
in the same window (and its own latency: the floor this process adds).

Each client is a bare `asyncio.Protocol` speaking HTTP/1.1 (chunked or not) — no HTTP
library per connection, so one process reaches 10,000 connections. Progress goes to stdout
as JSON lines (``{"event": "ramped" | "window_start" | "window_end" | "result", ...}``) so
the harness can sample the gateway exactly over the window; logs go to stderr.

    python -m bench.sse_loadgen --url http://127.0.0.1:8000/api/stream/prices \\
        --clients 3000 --window 10 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import sys
import time
from urllib.parse import urlsplit

import orjson
import uvloop

from bench.sse_client import SseClient, Window, percentile_ms

log = logging.getLogger("bench.loadgen")


class Reference:
    """A direct Redis subscriber to ``NS:prices``: what was offered in the window."""

    def __init__(self, redis_url: str, channel: str, window: Window) -> None:
        self.redis_url, self.channel, self.window = redis_url, channel, window
        self.offered = 0
        self.latency = Window()  # its own histogram: the floor this process adds

    async def run(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.redis_url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._count(message["data"])
        finally:
            await client.aclose()

    def _count(self, data: bytes) -> None:
        now = time.time()
        self.latency.start, self.latency.end = self.window.start, self.window.end
        try:
            self.offered += self.latency.record(self.latency.parse(data), now)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            log.warning("unparsable message on %s", self.channel)


def close_all(clients: list[SseClient]) -> None:
    for c in clients:
        c.close()


def emit(event: str, **fields: object) -> None:
    """One JSON progress line on stdout for the harness."""
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


async def open_batch(
    host: str, port: int, request: bytes, window: Window, n: int, timeout_s: float
) -> list[SseClient]:
    """Open ``n`` connections at once; wait (bounded) for each one's first event."""
    loop = asyncio.get_running_loop()

    async def one() -> SseClient:
        client = SseClient(request, window)
        try:
            await loop.create_connection(lambda: client, host, port)
            await asyncio.wait_for(asyncio.shield(client.first_event), timeout_s)
        except (TimeoutError, OSError, ConnectionError) as e:
            client.error = client.error or f"{type(e).__name__}: {e}"
        return client

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def ramp(args: argparse.Namespace, window: Window) -> tuple[list[SseClient], float]:
    """All clients, opened in batches; stop early past the deadline or when stalled.

    Stalled: ``--stall-batches`` batches in a row in which under 10 % of the new clients got
    their first event — the gateway no longer serves new clients, and waiting out the
    rest only makes the run longer. Clients never opened count as failed.
    """
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = url.path + (f"?{url.query}" if url.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()
    clients: list[SseClient] = []
    started, stalled = time.monotonic(), 0
    while len(clients) < args.clients and stalled < args.stall_batches:
        if time.monotonic() - started > args.ramp_timeout:
            log.warning("ramp deadline passed with %d of %d clients", len(clients), args.clients)
            break
        n = min(args.batch, args.clients - len(clients))
        batch = await open_batch(host, port, request, window, n, args.batch_timeout)
        clients += batch
        stalled = stalled + 1 if sum(c.error is None for c in batch) < 0.1 * n else 0
        ok = sum(c.error is None for c in clients)
        log.info("ramp: %d opened, %d connected", len(clients), ok)
        if args.batch_pause:
            await asyncio.sleep(args.batch_pause)
    if stalled >= args.stall_batches:
        log.warning("ramp stalled: %d batches in a row mostly failed", stalled)
    return clients, time.monotonic() - started


def summarize(
    args: argparse.Namespace, clients: list[SseClient], window: Window, ref: Reference | None
) -> dict[str, object]:
    """The result of one run, as the harness reports it."""
    connected = [c for c in clients if c.first_event.done() and c.error is None]
    dropped = [c for c in connected if c.closed]
    offered = ref.offered if ref else round(args.tickers * args.rate * args.window)
    delivered = sum(c.in_window for c in connected)
    fractions = sorted(c.in_window / offered for c in connected) if offered else []
    errors: dict[str, int] = {}
    for c in clients:
        if c.error is not None:
            errors[c.error[:60]] = errors.get(c.error[:60], 0) + 1

    def frac(q: float) -> float | None:
        return round(fractions[int(q * (len(fractions) - 1))], 4) if fractions else None

    return {
        "clients": args.clients,
        "connected": len(connected),
        "failed": args.clients - len(connected) + len(dropped),
        "dropped": len(dropped),
        "not_opened": args.clients - len(clients),
        "errors": errors,
        "window_s": args.window,
        "offered_per_client": offered,
        "offered_source": "redis" if ref else "nominal",
        "delivered": delivered,
        "delivered_per_s": round(delivered / args.window, 1),
        "pct_of_offered": round(100 * delivered / (offered * args.clients), 2) if offered else None,
        "client_fraction_min": frac(0),
        "client_fraction_p1": frac(0.01),
        "client_fraction_p50": frac(0.5),
        "clients_ge_95pct": sum(f >= 0.95 for f in fractions),
        "clients_ge_99pct": sum(f >= 0.99 for f in fractions),
        "events": sum(c.events for c in connected),
        "p50_ms": percentile_ms(window.hist, 0.5),
        "p90_ms": percentile_ms(window.hist, 0.9),
        "p99_ms": percentile_ms(window.hist, 0.99),
        "max_ms": percentile_ms(window.hist, 1.0),
        "ref_p50_ms": percentile_ms(ref.latency.hist, 0.5) if ref else None,
        "ref_p99_ms": percentile_ms(ref.latency.hist, 0.99) if ref else None,
    }


async def measure(args: argparse.Namespace) -> dict[str, object]:
    """Ramp, settle, one window, a grace period for in-flight updates; the summary."""
    window = Window()
    ref = Reference(args.redis_url, args.channel, window) if args.redis_url else None
    async with contextlib.AsyncExitStack() as stack:
        if ref is not None:
            task = asyncio.create_task(ref.run(), name="reference")
            stack.callback(task.cancel)
        clients, ramp_s = await ramp(args, window)
        stack.callback(close_all, clients)
        ok = sum(c.error is None for c in clients)
        emit("ramped", connected=ok, ramp_s=round(ramp_s, 2))
        await asyncio.sleep(args.settle)
        window.start = time.time()
        window.end = window.start + args.window
        emit("window_start", events=sum(c.events for c in clients))
        await asyncio.sleep(args.window)
        emit("window_end", events=sum(c.events for c in clients))
        await asyncio.sleep(args.grace)  # updates stamped inside the window, still in flight
        if ref is not None and task.done() and task.exception() is not None:
            raise RuntimeError(f"reference subscriber failed: {task.exception()}")
        result = summarize(args, clients, window, ref)
        result["ramp_s"] = round(ramp_s, 2)
        return result


def raise_nofile(wanted: int) -> None:
    """Lift the soft open-files limit towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open-files limit %d is below the %d this run needs", hard, wanted)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the SSE endpoint")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--batch", type=int, default=250, help="connections opened at once")
    p.add_argument("--batch-pause", type=float, default=0.0, help="seconds between batches")
    p.add_argument("--batch-timeout", type=float, default=15.0, help="first-event deadline")
    p.add_argument("--ramp-timeout", type=float, default=180.0)
    p.add_argument(
        "--stall-batches",
        type=int,
        default=3,
        help="stop the ramp after this many batches in a row mostly failed",
    )
    p.add_argument("--settle", type=float, default=2.0, help="seconds after the ramp")
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--grace", type=float, default=2.0, help="late updates still counted")
    p.add_argument("--redis-url", help="count offered updates on the channel (else nominal)")
    p.add_argument("--channel", default="pricefeed:prices")
    p.add_argument("--tickers", type=int, default=10, help="for the nominal offer only")
    p.add_argument("--rate", type=float, default=2.0, help="Hz, for the nominal offer only")
    args = p.parse_args(argv)
    if args.clients < 1 or args.batch < 1 or args.window <= 0:
        p.error("--clients and --batch must be >= 1, --window > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s loadgen %(levelname)s %(message)s",
    )
    raise_nofile(args.clients + 256)
    # The load generator must not be the bottleneck: uvloop, as the gateways run.
    result = uvloop.run(measure(args))
    emit("result", **result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
