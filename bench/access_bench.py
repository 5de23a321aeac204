"""Gateway CPU per event with read access off and with JWT on, in one run (docs/ACCESS.md).

One redis-server and one publisher (the real producer, 10 tickers at 10 Hz) for the whole
run; then, in alternating rounds, a gateway with ``PRICEFEED_READ_AUTH=none`` and one with
``jwt`` (HS256, a token for every ticker in ``?access_token=``), each under the same C
load generator, with the same pinning as bench/gateway_bench.py (gateway on core 0, the
rest on core 1). The token is verified once per connection and expires by a timer, so the
two should cost the same per event; the figure is the check.

    uv run python -m bench.access_bench                      # 1,000 clients, 3 rounds
    uv run python -m bench.access_bench --clients 20 --window 2 --rounds 1   # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import sys
from pathlib import Path
from urllib.parse import quote

from bench import cloadgen
from bench.gateway_bench import Scenario, loadgen, publishing, uptime
from bench.gateway_bench import parse_args as bench_args
from bench.procs import (
    CORE_GATEWAY,
    ROOT,
    Procs,
    RedisServer,
    free_port,
    gateway_argv,
    http_ok,
    wait_until,
)
from bench.sampling import TreeSampler
from shared.tokens import mint

SECRET = "bench-secret-" + "0" * 40  # a bench-only HS256 key, never a real one


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rate-hz", type=float, default=10.0, help="publisher ticks per second")
    p.add_argument("--window", type=float, default=10.0, help="measured seconds per gateway")
    p.add_argument("--rounds", type=int, default=3, help="off/jwt pairs, alternating")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args(argv)


def measure(procs: Procs, args: argparse.Namespace, shared: argparse.Namespace,
            redis_url: str, namespace: str, mode: str) -> dict[str, object]:
    port = free_port()
    argv, env = gateway_argv("ours", port, redis_url, namespace)
    query = ""
    if mode == "jwt":
        env.update(PRICEFEED_READ_AUTH="jwt", PRICEFEED_JWT_SECRET=SECRET)
        token = mint(SECRET, "HS256", tickers="*", ttl_s=3600)
        query = "?access_token=" + quote(token)
    proc = procs.start(f"gateway-{mode}-{namespace}", argv, CORE_GATEWAY, env)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/api/health"), 30, mode, proc)
        sampler = TreeSampler(proc.pid, port)
        row = loadgen(procs, shared, port, args.clients, redis_url, namespace, args.window,
                      sampler, query=query)
    finally:
        procs.stop(proc)
    return {"mode": mode, **{k: row.get(k) for k in (
        "connected", "failed", "window_events", "gateway_us_per_event", "gateway_cpu_pct",
        "p50_ms", "p99_ms")}, "uptime": uptime()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shared = bench_args(["--gateways", "ours", "--window", str(args.window)])
    shared.c_loadgen = cloadgen.build()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.out / f"access-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    procs = Procs(run_dir)
    sc = Scenario("access", 10, 1.0 / args.rate_hz, args.clients)
    try:
        with RedisServer(procs) as redis, publishing(procs, shared, sc, redis.url, "access"):
            for _ in range(args.rounds):
                for mode in ("off", "jwt"):
                    rows.append(measure(procs, args, shared, redis.url, "access", mode))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        procs.stop_all()
    summary = summarize(rows)
    doc = {"started": stamp, "command": " ".join(["python -m bench.access_bench",
                                                  *(argv or sys.argv[1:])]),
           "rows": rows, "summary": summary}
    (run_dir / "results.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(summary))
    return 0


def summarize(rows: list[dict[str, object]]) -> dict[str, object]:
    """Median µs per event of each mode, and jwt's cost over off in percent."""
    med = {}
    for mode in ("off", "jwt"):
        values = [float(r["gateway_us_per_event"]) for r in rows  # type: ignore[arg-type]
                  if r["mode"] == mode and r.get("gateway_us_per_event") is not None]
        med[mode] = round(statistics.median(values), 2) if values else None
    extra = None
    if med["off"] and med["jwt"]:
        extra = round(100 * (med["jwt"] / med["off"] - 1), 1)
    return {"us_per_event_off": med["off"], "us_per_event_jwt": med["jwt"], "jwt_extra_pct": extra}


if __name__ == "__main__":
    raise SystemExit(main())
