"""Gateway fan-out benchmark (docs/PERFORMANCE.md): ours against two baselines, one run.

One command starts a private redis-server, a publisher (the real producer) and each gateway
in turn — ours (``pricefeed gateway``), the per-client-PubSub baseline and the polling
baseline — with the gateway pinned to core 0 and Redis, publisher and load generator on
core 1. For each scenario it ramps C SSE clients, settles, measures one window and reports
delivered updates/s, % of offered, p50/p99 latency, gateway CPU % and RSS, failed clients;
the ``idle`` scenario reports gateway memory per idle connection. Every process it starts
is stopped when it ends, on error or Ctrl+C too.

    uv run python -m bench.gateway_bench                  # everything (~10 min)
    uv run python -m bench.gateway_bench --scenarios latency-100,2hz-3k --window 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import cloadgen, report
from bench.procs import (
    CORE_GATEWAY,
    CORE_REST,
    ROOT,
    Procs,
    RedisServer,
    free_port,
    gateway_argv,
    http_ok,
    module_available,
    publisher_argv,
    wait_until,
)
from bench.sampling import TreeSampler, cpu_cores
from shared.keys import Keys
from shared.settings import DEFAULT_TICKERS

GATEWAYS = ("ours", "pubsub", "polling")
# Ours with uvicorn's stock protocols instead of the guarded one, or with the direct path
# off (bench/gateway_variants.py).
VARIANTS = ("ours-httptools", "ours-h11", "ours-task")
LOADGENS = ("c", "python")
STREAM_PATH = "/api/stream/prices"


@dataclass(frozen=True)
class Scenario:
    name: str
    tickers: int
    interval_s: float  # publisher tick interval
    clients: int
    idle: bool = False  # no publisher during the window: memory per idle connection


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("latency-100", 10, 0.5, 100),
        Scenario("2hz-3k", 10, 0.5, 3000),
        Scenario("10hz-3k", 10, 0.1, 3000),
        Scenario("10hz-5k", 10, 0.1, 5000),
        Scenario("2hz-10k", 10, 0.5, 10000),
        Scenario("idle", 10, 0.5, 5000, idle=True),
        Scenario("smoke", 10, 0.1, 20),
    )
}
DEFAULT_SCENARIOS = "latency-100,2hz-3k,10hz-3k,2hz-10k,idle"


def tickers(n: int) -> list[str]:
    """The ten default tickers, then synthetic ones (``X0010``...) for larger sets."""
    return [*DEFAULT_TICKERS[:n], *(f"X{i:04d}" for i in range(len(DEFAULT_TICKERS), n))]


def uptime() -> str:
    """``uptime`` output: the machine's load beside every figure."""
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


@contextmanager
def publishing(
    procs: Procs, args: argparse.Namespace, sc: Scenario, redis_url: str, namespace: str
) -> Iterator[None]:
    """The publisher for ``sc``, running once the cache holds every ticker."""
    argv, env = publisher_argv(
        args.publisher, tickers(sc.tickers), sc.interval_s, redis_url, namespace
    )
    proc = procs.start(f"publisher-{namespace}", argv, CORE_REST, env)
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            wait_until(
                lambda: client.hlen(Keys(namespace).latest) >= sc.tickers,
                30,
                "publisher filling the cache",
                proc,
            )
        finally:
            client.close()
        yield
    finally:
        procs.stop(proc)


@contextmanager
def gateway(procs: Procs, name: str, redis_url: str, namespace: str) -> Iterator[TreeSampler]:
    """One gateway on core 0, healthy; a sampler of its process tree."""
    port = free_port()
    argv, env = gateway_argv(name, port, redis_url, namespace)
    proc = procs.start(f"gateway-{name}-{namespace}", argv, CORE_GATEWAY, env)
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/api/health"), 30, f"gateway {name}", proc
        )
        yield TreeSampler(proc.pid, port)
    finally:
        procs.stop(proc)


def loadgen(
    procs: Procs,
    args: argparse.Namespace,
    port: int,
    clients: int,
    redis_url: str | None,
    namespace: str,
    window_s: float,
    sampler: TreeSampler,
    grace_s: float | None = None,
    kind: str = "c",
    profile: Path | None = None,
    query: str = "",
) -> dict[str, object]:
    """Run the load generator on core 1; sample the gateway over its window.

    ``kind``: the C generator (bench/sse_loadgen.c) or the Python one; both take the same
    flags and print the same JSON lines. ``profile``: record the gateway with py-spy over
    the window into this file. ``query``: appended to the stream's URL (``?access_token=``).
    """
    grace = args.grace if grace_s is None else grace_s
    exe = [str(args.c_loadgen)] if kind == "c" else [sys.executable, "-m", "bench.sse_loadgen"]
    argv = [*exe, "--url",
            f"http://127.0.0.1:{port}{STREAM_PATH}{query}", "--clients", str(clients),
            "--window", str(window_s), "--settle", str(args.settle), "--grace", str(grace),
            "--batch", str(args.batch), "--batch-timeout", str(args.batch_timeout),
            "--ramp-timeout", str(args.ramp_timeout), "--stall-batches", str(args.stall_batches),
            "--channel", Keys(namespace).prices]  # fmt: skip
    if redis_url:
        argv += ["--redis-url", redis_url]
    proc = procs.start(f"loadgen-{namespace}", argv, CORE_REST, stdout=subprocess.PIPE)
    # A watchdog: the load generator bounds its own run; if it hangs anyway, kill it.
    limit_s = args.ramp_timeout + args.batch_timeout + args.settle + window_s + grace + 60
    watchdog = threading.Timer(limit_s, proc.kill)
    watchdog.start()
    try:
        result = read_progress(proc, sampler, profile, window_s)
        if proc.wait() != 0 or "connected" not in result:
            raise RuntimeError(
                f"load generator failed (status {proc.returncode}); see loadgen-{namespace}.log"
            )
        return result
    finally:
        watchdog.cancel()
        procs.stop(proc)


def read_progress(
    proc: subprocess.Popen[bytes], sampler: TreeSampler, profile: Path | None, window_s: float
) -> dict[str, object]:
    """Follow the load generator's JSON lines; sample the gateway (and it) over the window.

    CPU per event = CPU seconds over the window ÷ SSE events the clients received in it
    (each generator reports its running event count at the window's start and end).
    """
    result: dict[str, object] = {}
    own = TreeSampler(proc.pid)  # is the load generator itself saturated?
    spy: subprocess.Popen[bytes] | None = None
    events0 = 0
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            msg = json.loads(line)
            if msg["event"] == "window_start":
                sampler.begin()
                own.begin()
                events0 = int(msg.get("events", 0))
                if profile is not None:
                    spy = start_profile(sampler.pid, window_s, profile)
            elif msg["event"] == "window_end":
                gw, lg = sampler.end(), own.end()
                events = int(msg.get("events", 0)) - events0
                result.update(
                    gateway_cpu_pct=gw["cpu_pct"], gateway_wait_pct=gw["wait_pct"],
                    rss_bytes=gw["rss_bytes"], core_busy_pct=gw["core_busy_pct"],
                    loadgen_cpu_pct=lg["cpu_pct"], loadgen_wait_pct=lg["wait_pct"],
                    window_events=events,
                    gateway_us_per_event=per_event_us(gw["cpu_s"], events),
                    loadgen_us_per_event=per_event_us(lg["cpu_s"], events),
                )  # fmt: skip
            elif msg["event"] == "result":
                result.update({k: v for k, v in msg.items() if k not in ("event", "t")})
    finally:
        if spy is not None:
            stop_profile(spy)
    return result


def per_event_us(cpu_s: object, events: int) -> float | None:
    return round(float(cpu_s) * 1e6 / events, 2) if events > 0 else None  # type: ignore[arg-type]


def start_profile(pid: int, window_s: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the gateway's tree for the window, as collapsed stacks (``--format
    raw``: one line per stack with its sample count). Non-blocking: py-spy reads the
    process's memory without pausing it, so the gateway runs at its own pace."""
    exe = shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("py-spy is not on PATH (uv sync installs it with the dev group)")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(window_s))),
            "--rate", "250", "--nonblocking", "--subprocesses", "--format", "raw",
            "--output", str(out)]  # fmt: skip
    log = open(out.with_suffix(".log"), "ab")
    try:
        return subprocess.Popen(
            ["taskset", "-c", CORE_REST, *argv], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    finally:
        log.close()


def stop_profile(spy: subprocess.Popen[bytes]) -> None:
    try:
        spy.wait(30)  # it stops by itself after its duration and writes the file
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


class Results:
    """Rows of the run, saved (JSON + Markdown) after each one, so a broken run keeps them."""

    def __init__(self, run_dir: Path, meta: dict[str, object]) -> None:
        self.run_dir, self.meta = run_dir, meta
        self.rows: list[dict[str, object]] = []

    def add(self, scenario: str, name: str, measure: Callable[[], dict[str, object]]) -> None:
        """Measure one gateway; a failure becomes a row naming it, and the run goes on."""
        print(f"  {scenario}: {name} ...", file=sys.stderr, flush=True)
        try:
            row = measure()
        except Exception as e:  # one gateway's failure must not lose the others' figures
            traceback.print_exc()
            print(f"  {scenario}: {name} failed: {e}", file=sys.stderr, flush=True)
            row = {"error": f"{type(e).__name__}: {e}"}
        self.rows.append({"scenario": scenario, "gateway": name, **row, "uptime": uptime()})
        self.save()

    def save(self) -> str:
        self.meta["uptime_end"] = uptime()
        doc = {"meta": self.meta, "rows": self.rows}
        (self.run_dir / "results.json").write_text(json.dumps(doc, indent=1))
        table = report.markdown(self.meta, self.rows)
        (self.run_dir / "results.md").write_text(table)
        return table


def run_load(
    procs: Procs, args: argparse.Namespace, sc: Scenario, redis: RedisServer, results: Results
) -> None:
    """One load scenario: the publisher runs; each gateway in turn under C clients."""
    namespace, clients = f"bench{len(results.rows)}", args.clients or sc.clients

    def measure(name: str, kind: str) -> dict[str, object]:
        profile = results.run_dir / f"profile-{sc.name}-{name}-{kind}.txt"
        with gateway(procs, name, redis.url, namespace) as sampler:
            row = loadgen(
                procs, args, sampler.port, clients, redis.url, namespace, args.window, sampler,
                kind=kind, profile=profile if args.profile else None,
            )  # fmt: skip
        return {"loadgen": kind, "tickers": sc.tickers, "rate_hz": round(1 / sc.interval_s, 2),
                **row}  # fmt: skip

    with publishing(procs, args, sc, redis.url, namespace):
        for name in args.gateways:
            for kind in args.loadgen:
                results.add(sc.name, name, lambda: measure(name, kind))  # noqa: B023 - at once


def run_idle(
    procs: Procs, args: argparse.Namespace, sc: Scenario, redis: RedisServer, results: Results
) -> None:
    """Memory per idle connection: RSS after N quiet connections, minus before, over N."""
    namespace, clients = f"bench{len(results.rows)}", args.idle_clients or sc.clients

    kind = args.loadgen[0]

    def measure(name: str) -> dict[str, object]:
        with gateway(procs, name, redis.url, namespace) as sampler:
            # Warm up (first-request allocations), then N connections held a while.
            loadgen(procs, args, sampler.port, 20, None, namespace, 0.1, sampler, 0.0, kind)
            before = sampler.rss()
            row = loadgen(
                procs, args, sampler.port, clients, None, namespace, args.idle_hold, sampler,
                0.0, kind,
            )  # fmt: skip
        after = int(row["rss_bytes"])  # type: ignore[call-overload]
        per = (after - before) / max(1, int(row["connected"]))  # type: ignore[call-overload]
        return {"loadgen": kind, "clients": clients, "connected": row["connected"],
                "failed": row["failed"], "errors": row["errors"],
                "rss_before_bytes": before, "rss_after_bytes": after,
                "bytes_per_connection": round(per)}  # fmt: skip

    with publishing(procs, args, sc, redis.url, namespace):
        pass  # fill the cache once, then stop: the connections below see no updates
    for name in args.gateways:
        results.add(sc.name, name, lambda: measure(name))  # noqa: B023 - called at once


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scenarios", default=DEFAULT_SCENARIOS, help=f"comma list of {', '.join(SCENARIOS)}"
    )
    p.add_argument(
        "--gateways", default=",".join(GATEWAYS),
        help="comma list of ours, pubsub, polling, ours-httptools, ours-h11, ours-task"
    )
    p.add_argument(
        "--loadgen",
        default="c",
        help="c (bench/sse_loadgen.c, built with gcc) or python (bench/sse_loadgen.py); "
        "a comma list measures each gateway with each, in turn",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record each gateway with py-spy over the window (profile-*.txt in the run dir)",
    )
    p.add_argument("--clients", type=int, help="override every load scenario's client count")
    p.add_argument("--idle-clients", type=int, help="override the idle scenario's count")
    p.add_argument("--window", type=float, default=10.0, help="measured seconds")
    p.add_argument("--idle-hold", type=float, default=1.0,
                   help="seconds the idle connections are held before RSS is read")  # fmt: skip
    p.add_argument("--settle", type=float, default=2.0, help="seconds after the ramp")
    p.add_argument(
        "--grace",
        type=float,
        default=2.0,
        help="seconds after the window in which late updates still count",
    )
    p.add_argument("--batch", type=int, default=250, help="connections opened at once")
    p.add_argument("--ramp-timeout", type=float, default=150.0)
    p.add_argument("--stall-batches", type=int, default=3,
                   help="end a ramp after this many batches in a row mostly failed")  # fmt: skip
    p.add_argument(
        "--batch-timeout",
        type=float,
        default=15.0,
        help="seconds a batch of new clients may take to get their first event",
    )
    p.add_argument(
        "--publisher",
        choices=("auto", "producer", "contract"),
        default="auto",
        help="auto: the real producer when this checkout has it",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.gateways = [g.strip() for g in args.gateways.split(",") if g.strip()]
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    bad += [g for g in args.gateways if g not in (*GATEWAYS, *VARIANTS)]
    args.loadgen = [k.strip() for k in args.loadgen.split(",") if k.strip()]
    bad += [k for k in args.loadgen if k not in LOADGENS] or ([] if args.loadgen else ["--loadgen"])
    if bad:
        p.error(f"unknown scenario or gateway: {', '.join(bad)}")
    if "ours" in args.gateways and not module_available("gateway.server"):
        p.error("gateway.server is not in this checkout: pass --gateways pubsub,polling")
    if args.publisher == "auto":
        args.publisher = "producer" if module_available("producer.service") else "contract"
    return args


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through every `finally`, like Ctrl+C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.c_loadgen = cloadgen.build() if "c" in args.loadgen else None
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the gateways
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.out / f"gateway-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "started": stamp,
        "uptime_start": uptime(),
        "cores": cpu_cores(),
        "publisher": args.publisher,
        "loadgen": ",".join(args.loadgen),
        "window_s": args.window,
        "nofile": hard,
        "command": " ".join(["python", "-m", "bench.gateway_bench", *(argv or sys.argv[1:])]),
    }
    results = Results(run_dir, meta)
    procs = Procs(run_dir)
    try:
        with RedisServer(procs) as redis:
            for name in args.scenarios:
                sc = SCENARIOS[name]
                (run_idle if sc.idle else run_load)(procs, args, sc, redis, results)
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        print(results.save())
        print(f"results and logs: {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
