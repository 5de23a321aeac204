"""The producer on a Redis Cluster (docs/CLUSTER.md): updates/s and CPU per update of each
Redis shard and each producer process, with one producer and with two sharing the
partitions, beside one producer on one redis-server measured the same way in the same
run. Run by ``bench/producer_bench.py --topology cluster``.

A private 3-primary Cluster (no replicas: the machine's cores go to the shards) on free
ports; real ``pricefeed producer`` processes (the simulator at its fastest tick, 10 ms)
over ``--tickers`` tickers in P = 16 partitions. Updates are counted per partition as the
rise of the last seq in its log between the start and the end of the window (a seq block's
unused tail, under 1 % here, counts as written). No subscribers: ``SPUBLISH`` to a shard
channel nobody reads costs its node little, so the figures are the writes' cost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import redis
from redis.cluster import RedisCluster

from pricefeed.localredis import find_server
from shared.keys import Layout
from shared.ticklog import parse_entry_id

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def single() -> Iterator[list[tuple[int, psutil.Process]]]:
    """One private redis-server: its port and process (a list, as `cluster` gives)."""
    binary = find_server()
    if binary is None:
        raise SystemExit("needs redis-server on PATH (apt-get install redis-server)")
    workdir = tempfile.mkdtemp(prefix="pricefeed-server-bench-")
    port = _free_port()
    proc = subprocess.Popen(
        [binary.path, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _pings(port), "the redis-server")
        yield [(port, psutil.Process(proc.pid))]
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def cluster(primaries: int = 3) -> Iterator[list[tuple[int, psutil.Process]]]:
    """A private Cluster of ``primaries`` nodes: each one's port and process."""
    binary, cli = find_server(), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise SystemExit("needs redis-server and redis-cli on PATH (apt-get install redis-server)")
    workdir = tempfile.mkdtemp(prefix="pricefeed-cluster-bench-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = [_free_port() for _ in range(primaries)]
        for port in ports:
            procs.append(subprocess.Popen(
                [binary.path, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir, "--cluster-enabled", "yes",
                 "--cluster-config-file", f"{workdir}/nodes-{port}.conf",
                 "--cluster-port", str(_free_port()), "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            _wait(lambda p=port: _pings(p), "a Cluster node")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        _wait(lambda: all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok"
                          for p in ports), "the Cluster")
        yield [(p, psutil.Process(proc.pid)) for p, proc in zip(ports, procs, strict=True)]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait(predicate: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _usage(process: psutil.Process) -> tuple[float, float]:
    """CPU seconds used, and seconds runnable but kept off a CPU by other processes (the
    machine may be shared: Linux schedstat, 0 elsewhere)."""
    times = process.cpu_times()
    waited = 0
    for stat in Path(f"/proc/{process.pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            waited += int(stat.read_text().split()[1])
    return float(times.user + times.system), waited / 1e9


def _tops(client: RedisCluster, layout: Layout) -> list[int]:
    """The last seq in each partition's log."""
    out = []
    for keys in layout.all():
        entries = client.xrevrange(keys.ticks, count=1)
        out.append(parse_entry_id(entries[0][0])[0] if entries else 0)
    return out


def _holders(client: RedisCluster, layout: Layout) -> list[str | None]:
    return [(v.decode() if (v := client.get(k.lease)) else None) for k in layout.all()]


def run_mode(nodes: list[tuple[int, psutil.Process]], producers: int, tickers: int,
             seconds: float, log_dir: Path, clustered: bool = True) -> dict[str, object]:
    """``producers`` producer processes over ``tickers`` tickers for ``seconds``, on the
    Cluster of ``nodes`` (or on its one server when not ``clustered``)."""
    namespace = f"bench-{'cluster' if clustered else 'server'}-{producers}"
    layout = Layout(namespace, PARTITIONS if clustered else 0)
    env = {"PRICEFEED_NAMESPACE": namespace, "PRICEFEED_TICK_INTERVAL": "0.01",
           "PRICEFEED_TICKERS": ",".join(f"T{i}" for i in range(tickers)),
           "PRICEFEED_MAX_WATCHLIST": str(max(tickers, 1000)), "PRICEFEED_LOG_LEVEL": "WARNING"}
    client: redis.Redis | RedisCluster
    if clustered:
        env["REDIS_URL"] = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p, _ in nodes)
        env["PRICEFEED_PARTITIONS"] = str(PARTITIONS)
        client = RedisCluster(host="127.0.0.1", port=nodes[0][0], socket_timeout=5)
    else:
        env["REDIS_URL"] = f"redis://127.0.0.1:{nodes[0][0]}/0"
        client = redis.Redis(port=nodes[0][0], socket_timeout=5)
    with ExitStack() as stack:
        procs = [stack.enter_context(_producer(env, log_dir / f"{namespace}-{i}.log"))
                 for i in range(producers)]
        fair = -(-len(layout.all()) // producers)
        _wait(lambda: None not in (h := _holders(client, layout))
              and max(h.count(o) for o in set(h)) <= fair
              and all(_tops(client, layout)), "every partition written", 60)
        time.sleep(1.0)  # warm: blocks reserved, bars formed
        pids = [psutil.Process(p.pid) for p in procs]
        owners = _holders(client, layout)
        cpu0 = [_usage(n) for _, n in nodes], [_usage(p) for p in pids]
        tops0, started = _tops(client, layout), time.monotonic()
        time.sleep(seconds)
        cpu1 = [_usage(n) for _, n in nodes], [_usage(p) for p in pids]
        tops1, elapsed = _tops(client, layout), time.monotonic() - started
    written = [b - a for a, b in zip(tops0, tops1, strict=True)]
    served = {i: client.get_node_from_key(k.latest).port if isinstance(client, RedisCluster)
              else nodes[0][0] for i, k in enumerate(layout.all())}
    client.close()
    shards = [_row(f"redis :{port}", cpu0[0][j], cpu1[0][j], elapsed,
                   sum(w for i, w in enumerate(written) if served[i] == port))
              for j, (port, _) in enumerate(nodes)]
    writers = []
    for j, proc in enumerate(procs):
        mine = [i for i, o in enumerate(owners) if o and f":{proc.pid}:" in o]
        writers.append(_row(f"producer pid {proc.pid}", cpu0[1][j], cpu1[1][j], elapsed,
                            sum(written[i] for i in mine)))
    return {"topology": "cluster" if clustered else "server", "producers": producers,
            "tickers": tickers, "partitions": PARTITIONS if clustered else 0,
            "seconds": round(elapsed, 2), "updates_per_s": round(sum(written) / elapsed),
            "shards": shards, "producer_processes": writers}


def _row(name: str, before: tuple[float, float], after: tuple[float, float], elapsed: float,
         updates: int) -> dict[str, object]:
    cpu_s, wait_s = after[0] - before[0], after[1] - before[1]
    return {"process": name, "cpu_share": round(cpu_s / elapsed, 3),
            "cpu_wait_share": round(wait_s / elapsed, 3),
            "updates_per_s": round(updates / elapsed),
            "cpu_us_per_update": round(cpu_s / updates * 1e6, 2) if updates else None}


@contextmanager
def _producer(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pricefeed", "producer"], cwd=ROOT,
                                env={**full, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def run(tickers: int, seconds: float) -> list[dict[str, object]]:
    """One producer on one server, then one and two on one Cluster; each printed as it
    ends."""
    rows = []
    log_dir = Path(tempfile.mkdtemp(prefix="pricefeed-cluster-bench-logs-"))
    with single() as server:
        rows.append(_report(run_mode(server, 1, tickers, seconds, log_dir, clustered=False)))
    with cluster() as nodes:
        for producers in (1, 2):
            rows.append(_report(run_mode(nodes, producers, tickers, seconds, log_dir)))
    shutil.rmtree(log_dir, ignore_errors=True)
    return rows


def _report(row: dict[str, object]) -> dict[str, object]:
    where = (f"cluster, P={PARTITIONS}" if row["topology"] == "cluster" else "one server")
    print(f"  {where}, {row['producers']} producer(s), {row['tickers']} tickers: "
          f"{row['updates_per_s']:,} updates/s", flush=True)
    for r in [*row["shards"], *row["producer_processes"]]:  # type: ignore[misc]
        print(f"    {r['process']:22} CPU share {r['cpu_share']:.2f} (waiting for "
              f"a CPU {r['cpu_wait_share']:.2f}), "
              f"{r['updates_per_s']:>8,} updates/s, {r['cpu_us_per_update']} µs CPU "
              "per update", flush=True)
    return row
