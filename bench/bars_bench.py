"""What bars cost (docs/PERFORMANCE.md "Bars"), in one run:

1. producer throughput at 10,000 tickers, ticks back to back, with two draining subscribers,
   for: no tick log and no bars (the baseline), the tick log alone, the tick log and bars;
2. the latency of ``GET /api/bars/{ticker}?interval=1s&limit=300`` (300 bars) from a local
   client at the default load (a real producer with 10 tickers at 2 ticks/s and a real
   gateway), beside ``GET /api/prices/{ticker}`` from the same gateway.

    uv run python bench/bars_bench.py            # the full run (~1 min)
    uv run python bench/bars_bench.py --quick    # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from producer_bench import columns, free_port, redis_server, subscribers, throughput  # noqa: E402

from producer.publisher import BarOptions, Publisher  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.settings import DEFAULT_TICKERS  # noqa: E402

VARIANTS = {  # name: (tick log entries kept, bars)
    "no tick log, no bars (baseline)": (0, False),
    "tick log, no bars": (3600, False),
    "tick log + bars": (3600, True),
}


async def producer_rows(port: int, server, n: int, seconds: float) -> list[dict]:
    rows = []
    tickers = [f"T{i}" for i in range(n)]
    for name, (history_len, bars) in VARIANTS.items():
        keys = Keys(f"bars-bench-{len(rows)}")
        client = aioredis.Redis(port=port)
        await client.set(keys.lease, "bench")
        options = BarOptions({"1s": 3600, "1m": 86_400}, 1.0) if bars else None
        publisher = Publisher(client, keys, "bench", history_len=history_len, bars=options)
        publisher.begin(tickers, {})
        await publisher.restore_bars(tickers)
        with subscribers(port, keys):
            result = await throughput(publisher.publish, columns, publisher.settle, tickers,
                                      seconds, server)
        if publisher.failure.done():
            publisher.failure.result()
        if bars:
            assert await client.zcard(keys.bars("1s", "T0")) >= int(seconds) - 1, "no closes"
        await client.aclose()
        rows.append({"variant": name, "tickers": n, **result})
        print(f"  {name:32} {result['updates_per_s']:>9,} updates/s "
              f"({result['ms_per_tick']} ms/tick; CPU share producer "
              f"{result['producer_cpu_share']}, redis {result['redis_cpu_share']}; waiting "
              f"for a CPU: producer {result['producer_cpu_wait_share']}, redis "
              f"{result['redis_cpu_wait_share']})", flush=True)
    return rows


def seed_bars(port: int, keys: Keys, n: int) -> None:
    """``n`` closed 1 s bars per default ticker, ending a minute ago (contract JSON)."""
    client = redis.Redis(port=port)
    start = int(time.time()) - 60 - n
    for ticker in DEFAULT_TICKERS:
        members = {
            f'{{"t":{start + i},"o":100.0,"h":100.5,"l":99.5,"c":100.25,"n":3,"v":null}}':
                start + i for i in range(n)}
        client.zadd(keys.bars("1s", ticker), members)
    client.close()


def latencies(url: str, path: str, requests: int) -> dict[str, float]:
    with httpx.Client(base_url=url) as http:
        for _ in range(20):
            http.get(path).raise_for_status()  # warm up
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            response = http.get(path)
            times.append((time.perf_counter() - t) * 1e3)
            response.raise_for_status()
    body = response.json()
    count = len(body["bars"]) if "bars" in body else 1
    q = statistics.quantiles(times, n=100)
    return {"requests": requests, "items": count, "p50_ms": round(q[49], 2),
            "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2), "max_ms": round(max(times), 2)}


def api_rows(port: int, requests: int) -> dict[str, dict[str, float]]:
    keys = Keys("bars-bench-api")
    seed_bars(port, keys, 3600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}
    env.update(REDIS_URL=f"redis://127.0.0.1:{port}/0", PRICEFEED_NAMESPACE=keys.namespace,
               PRICEFEED_PORT=str(free_port()), PRICEFEED_LOG_LEVEL="WARNING")
    url = f"http://127.0.0.1:{env['PRICEFEED_PORT']}"
    procs = [subprocess.Popen([sys.executable, "-m", "pricefeed", role], cwd=ROOT, env=env)
             for role in ("producer", "gateway")]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/api/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not become ready")
            time.sleep(0.1)
        out = {
            "GET /api/bars/AAPL?interval=1s&limit=300":
                latencies(url, "/api/bars/AAPL?interval=1s&limit=300", requests),
            "GET /api/prices/AAPL (baseline)": latencies(url, "/api/prices/AAPL", requests),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    for name, r in out.items():
        print(f"  {name:42} p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, p99 {r['p99_ms']} ms, "
              f"max {r['max_ms']} ms ({r['items']} items, {r['requests']} requests)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per variant")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bars.json")
    args = parser.parse_args()
    if args.quick:
        args.tickers, args.seconds, args.requests = 200, 2.0, 50
    load = os.getloadavg()
    print(f"bars bench: load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with redis_server() as (port, server):
        rows = asyncio.run(producer_rows(port, server, args.tickers, args.seconds))
        api = api_rows(port, args.requests)
    result = {"load_average_before": load, "load_average_after": os.getloadavg(),
              "throughput": rows, "api": api}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
