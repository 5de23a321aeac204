"""The gateway's CPU per delivered event on a Redis Cluster against one server
(docs/CLUSTER.md, docs/PERFORMANCE.md "The gateway on a Cluster").

One run, the same everything but the topology: a private redis-server, then a private
3-primary Cluster (P = 16); on each, a real ``pricefeed producer`` at ``--rate`` ticks/s over
``--tickers`` tickers, our gateway pinned to core 0, and the C load generator's
``--clients`` clients on core 1 for ``--window`` seconds. Reported per topology: events
delivered, the gateway's CPU share and CPU µs per delivered event, latency p50/p99.

    uv run python -m bench.gateway_cluster_bench               # 1,000 clients x 10 Hz
    uv run python -m bench.gateway_cluster_bench --clients 20 --window 2   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from bench import cloadgen
from bench.gateway_bench import gateway, loadgen, tickers, uptime
from bench.gateway_bench import parse_args as bench_args
from bench.procs import CORE_REST, Procs, service_env
from bench.producer_cluster_bench import PARTITIONS, cluster, single
from shared.keys import Layout

ROOT = Path(__file__).resolve().parent.parent


def _cached(url: str, layout: Layout, port: int) -> int:
    """Tickers in the cache, summed over the partitions."""
    client: redis.Redis | RedisCluster = (
        RedisCluster(host="127.0.0.1", port=port, socket_timeout=5) if layout.clustered
        else redis.Redis.from_url(url, socket_timeout=5))
    try:
        return sum(int(client.hlen(keys.latest)) for keys in layout.all())
    finally:
        client.close()


def measure(topology: str, args: argparse.Namespace, procs: Procs) -> dict[str, object]:
    """Producer, gateway and clients on ``topology`` (``server`` or ``cluster``)."""
    namespace = f"gwbench-{topology}"
    clustered = topology == "cluster"
    layout = Layout(namespace, PARTITIONS if clustered else 0)
    with ExitStack() as stack:
        nodes = stack.enter_context(cluster() if clustered else single())
        if clustered:
            url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p, _ in nodes)
        else:
            url = f"redis://127.0.0.1:{nodes[0][0]}/0"
        env = {**service_env(url, namespace), "PRICEFEED_TICK_INTERVAL": str(1 / args.rate),
               "PRICEFEED_TICKERS": ",".join(tickers(args.tickers)), "PRICEFEED_SEED": "1"}
        producer = procs.start(f"producer-{topology}", [sys.executable, "-m", "pricefeed",
                                                        "producer"], CORE_REST, env)
        stack.callback(procs.stop, producer)
        deadline = time.monotonic() + 60
        while _cached(url, layout, nodes[0][0]) < args.tickers:
            if time.monotonic() > deadline or producer.poll() is not None:
                raise SystemExit(f"the producer on the {topology} never filled the cache")
            time.sleep(0.1)
        sampler = stack.enter_context(gateway(procs, "ours", url, namespace))
        row = loadgen(procs, args, sampler.port, args.clients, None, namespace, args.window,
                      sampler)
    # On a Cluster each partition's tick is an event of its own (docs/CLUSTER.md): per
    # update delivered is the comparison that counts the same work on both.
    cpu_s = float(row.get("gateway_cpu_pct") or 0) / 100 * args.window  # type: ignore[arg-type]
    delivered = int(row.get("delivered") or 0)  # type: ignore[call-overload]
    per_update = round(cpu_s * 1e6 / delivered, 2) if delivered else None
    return {"topology": topology, "clients": args.clients, "tickers": args.tickers,
            "rate_hz": args.rate, "gateway_us_per_update": per_update, **row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--tickers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="producer ticks/s")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    own = parser.parse_args(argv)
    args = bench_args(["--window", str(own.window)])
    args.c_loadgen = cloadgen.build()
    args.clients, args.tickers, args.rate = own.clients, own.tickers, own.rate
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = own.out / f"gateway-cluster-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    procs = Procs(run_dir)
    rows = []
    print(f"Load at start: {uptime()}", flush=True)
    try:
        for topology in ("server", "cluster"):
            row = measure(topology, args, procs)
            rows.append(row)
            print(f"  {topology:8} {row.get('connected')} clients, "
                  f"{row.get('window_events')} events and {row.get('delivered')} updates in "
                  f"the window, gateway CPU {row.get('gateway_cpu_pct')} % "
                  f"({row.get('gateway_us_per_event')} µs per event, "
                  f"{row.get('gateway_us_per_update')} per update), "
                  f"p50 {row.get('p50_ms')} ms, p99 {row.get('p99_ms')} ms", flush=True)
    finally:
        procs.stop_all()
    print(f"Load at end: {uptime()}", flush=True)
    (run_dir / "results.json").write_text(json.dumps(
        {"command": " ".join(["python -m bench.gateway_cluster_bench", *(argv or sys.argv[1:])]),
         "started": stamp, "rows": rows}, indent=2))
    print(f"results and logs: {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
