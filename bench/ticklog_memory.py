"""Redis memory of the tick log: bytes per 1,000 ticks at 10 and 1,000 tickers.

Writes ticks with the real publisher (its tick script, log on) into a private
redis-server and reads ``MEMORY USAGE NS:ticks`` (all samples) and ``used_memory``.

    uv run python bench/ticklog_memory.py                 # 1,000 ticks at 10 and 1,000
    uv run python bench/ticklog_memory.py --ticks 100     # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from producer_bench import columns, redis_server  # noqa: E402

from producer.publisher import Publisher  # noqa: E402
from producer.sources.gbm import GBMSimulator  # noqa: E402
from shared.keys import Keys  # noqa: E402


async def measure(port: int, tickers: int, ticks: int) -> dict[str, float]:
    keys = Keys(f"mem-{tickers}")
    client = aioredis.Redis(port=port)
    sync = redis.Redis(port=port)
    before = sync.info("memory")["used_memory"]
    await client.set(keys.lease, "bench")
    publisher = Publisher(client, keys, "bench", history_len=ticks * 2, history_s=86_400)
    names = [f"T{i}" for i in range(tickers)]
    publisher.begin(names, {})
    sim = GBMSimulator(names, seed=1)
    for _ in range(ticks):
        await publisher.publish(columns(sim))
    await publisher.settle()
    if publisher.failure.done():
        publisher.failure.result()
    assert sync.xlen(keys.ticks) == ticks
    stream = sync.memory_usage(keys.ticks, samples=0)
    used = sync.info("memory")["used_memory"] - before
    raw = sum(len(f[b"map"]) for _, f in sync.xrange(keys.ticks, count=50)) / 50
    await client.aclose()
    sync.close()
    per_1000 = stream / ticks * 1000
    return {"tickers": tickers, "ticks": ticks, "stream_bytes": stream,
            "bytes_per_1000_ticks": round(per_1000), "tick_map_bytes": round(raw),
            "used_memory_delta": used,
            "default_log_bytes": round(per_1000 * 3.6)}  # PRICEFEED_HISTORY_LEN=3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,1000")
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ticklog.json")
    args = parser.parse_args(argv)
    rows = []
    with redis_server() as (port, _):
        for n in (int(s) for s in args.sizes.split(",")):
            row = asyncio.run(measure(port, n, args.ticks))
            rows.append(row)
            print(f"  {n:>5} tickers: {row['bytes_per_1000_ticks'] / 1e6:.2f} MB per 1,000 ticks "
                  f"(tick map {row['tick_map_bytes']:,} B; the default 3,600-tick log "
                  f"{row['default_log_bytes'] / 1e6:.1f} MB)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
