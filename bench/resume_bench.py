"""The gateway's cost of resuming clients that are 5 minutes behind (README "Resume and
continuity"): default (one event of the latest values) and ``?replay=all`` (every tick).

A private redis-server gets 5 minutes of the default load's log (600 ticks of 10
tickers, written by the real publisher), then a real producer keeps ticking at the
default load and a real `pricefeed gateway` process serves. N raw clients reconnect at
once with the id of the tick 600 ticks back; each is done when it holds everything up to
the log's top at that moment. Measured: the wall time until all are done, the gateway's
CPU seconds (psutil) and its peak RSS, and the bytes sent.

    uv run python bench/resume_bench.py                  # 1,000 clients, both modes
    uv run python bench/resume_bench.py --clients 20     # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from producer_bench import columns, free_port, redis_server  # noqa: E402

from producer.publisher import Publisher  # noqa: E402
from producer.sources.gbm import GBMSimulator  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.settings import DEFAULT_TICKERS  # noqa: E402

BEHIND_TICKS = 600  # 5 minutes at the default 2 ticks/s
NS = "bench-resume"


async def fill(port: int) -> None:
    """5 minutes (and a little) of the default load's log, as the publisher writes it."""
    keys = Keys(NS)
    client = aioredis.Redis(port=port)
    await client.set(keys.lease, "filler")
    publisher = Publisher(client, keys, "filler")
    publisher.begin(list(DEFAULT_TICKERS), {})
    sim = GBMSimulator(list(DEFAULT_TICKERS), seed=1)
    for _ in range(BEHIND_TICKS + 20):
        await publisher.publish(columns(sim))
    await publisher.settle()
    await client.delete(keys.lease)  # the real producer takes over from here
    await client.aclose()


async def one_client(port: int, request: bytes, marker: bytes, counter: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    tail = b""
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                raise RuntimeError(f"the gateway closed a stream: {tail[:200]!r}")
            counter[0] += len(chunk)
            if marker in tail + chunk:
                return
            tail = chunk[-len(marker):] if counter[0] > 4096 else tail + chunk
    finally:
        writer.close()


async def resume_all(port: int, clients: int, last_id: str, marker: bytes,
                     replay: bool) -> dict[str, float]:
    query = "?replay=all" if replay else ""
    request = (f"GET /api/stream/prices{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Last-Event-ID: {last_id}\r\n\r\n").encode()
    counter = [0]
    started = time.perf_counter()
    await asyncio.gather(*(one_client(port, request, marker, counter) for _ in range(clients)))
    return {"wall_s": round(time.perf_counter() - started, 2), "bytes": counter[0]}


def run_mode(port: int, gw: psutil.Process, sync: redis.Redis, clients: int,
             replay: bool) -> dict[str, object]:
    keys = Keys(NS)
    epoch = sync.get(keys.epoch).decode()
    ids = [i for i, _ in sync.xrevrange(keys.ticks, count=BEHIND_TICKS + 1)]
    top, back = (int(i.split(b"-")[0]) for i in (ids[0], ids[-1]))
    # Done when the top's entry arrived (replay), or the one catch-up event (default).
    marker = (b"id: %s-%d-" % (epoch.encode(), top)) if replay else (b"-%d\r\ndata: " % back)
    cpu_before = sum(gw.cpu_times()[:2])
    peak = [gw.memory_info().rss]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], gw.memory_info().rss)
            await asyncio.sleep(0.05)

    async def go() -> dict[str, float]:
        sampler = asyncio.create_task(sample())
        try:
            return await resume_all(port, clients, f"{epoch}-{back}-0", marker, replay)
        finally:
            sampler.cancel()

    rss_before = gw.memory_info().rss
    result = asyncio.run(go())
    cpu = sum(gw.cpu_times()[:2]) - cpu_before
    return {"mode": "replay=all" if replay else "default", "clients": clients,
            "ticks_behind": BEHIND_TICKS, **result, "gateway_cpu_s": round(cpu, 2),
            "gateway_cpu_ms_per_client": round(cpu / clients * 1e3, 2),
            "gateway_rss_before_mb": round(rss_before / 1e6, 1),
            "gateway_rss_peak_mb": round(peak[0] / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "resume.json")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"resume bench: load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows = []
    with redis_server() as (rport, _):
        asyncio.run(fill(rport))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}
        gport = free_port()
        env.update(REDIS_URL=f"redis://127.0.0.1:{rport}/0", PRICEFEED_NAMESPACE=NS,
                   PRICEFEED_PORT=str(gport), PRICEFEED_LOG_LEVEL="WARNING")
        procs = [subprocess.Popen([sys.executable, "-m", "pricefeed", role], cwd=ROOT, env=env)
                 for role in ("producer", "gateway")]
        sync = redis.Redis(port=rport)
        try:
            top = sync.xlen(Keys(NS).ticks)
            while sync.xlen(Keys(NS).ticks) < top + 2:  # the producer ticks on
                time.sleep(0.1)
            while True:  # the gateway serves
                try:
                    if b"200" in subprocess.run(
                            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             f"http://127.0.0.1:{gport}/api/health"],
                            capture_output=True, timeout=5).stdout:
                        break
                except subprocess.TimeoutExpired:
                    pass
                time.sleep(0.2)
            gw = psutil.Process(procs[1].pid)
            for replay in (False, True):
                row = run_mode(gport, gw, sync, args.clients, replay)
                rows.append(row)
                print(f"  {row['mode']:10} {row['clients']} clients {BEHIND_TICKS} ticks behind: "
                      f"all caught up in {row['wall_s']} s, gateway CPU {row['gateway_cpu_s']} s "
                      f"({row['gateway_cpu_ms_per_client']} ms per client), RSS "
                      f"{row['gateway_rss_before_mb']} -> peak {row['gateway_rss_peak_mb']} MB, "
                      f"{row['bytes'] / 1e6:.1f} MB sent", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            sync.close()
    result = {"load_average_before": load, "load_average_after": os.getloadavg(),
              "cpu_count": os.cpu_count(), "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
