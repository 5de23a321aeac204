"""A durable consumer process for tests: `shared.subscriber.consume` with a handler that
writes every tick it processes (and every ack it sends, before and with its reply) to a
file, flushed at once, so a test can SIGKILL it anywhere and still see what happened.

    python -m tests.helpers.durable_worker REDIS_URL NAMESPACE GROUP CONSUMER OUT [SLOW_MS]
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import redis.asyncio as aioredis

from shared.keys import Keys
from shared.subscriber import LogTrimmed, consume
from shared.ticklog import LogEntry


async def main(url: str, namespace: str, group: str, consumer: str, out_path: str,
               slow_ms: float) -> int:
    client = aioredis.from_url(url)
    out = open(out_path, "a", buffering=1)  # noqa: ASYNC230 - once, before any work

    def record(line: str) -> None:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())

    real_xack = client.xack

    async def xack(name: Any, groupname: Any, *ids: Any) -> int:
        names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        # Before the XACK too: a SIGKILL between Redis acking and the line below being
        # written would otherwise leave an ack with no trace (seen once under load).
        for entry_id in names:
            record(f"acking {entry_id}")
        acked = int(await real_xack(name, groupname, *ids))
        for entry_id in names:
            record(f"ack {entry_id} {acked}")
        return acked

    client.xack = xack  # type: ignore[method-assign]

    async def handler(entry: LogEntry) -> None:
        record(f"seen {entry.entry_id} {len(entry.updates)}")
        if slow_ms:
            await asyncio.sleep(slow_ms / 1000)

    task = asyncio.create_task(consume(client, Keys(namespace), group, consumer, handler,
                                       start="0", claim_idle_ms=500, count=16))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    record("started")
    try:
        await task
    except asyncio.CancelledError:
        return 0
    except LogTrimmed as e:
        print(f"durable_worker: {e}", file=sys.stderr)
        return 3
    finally:
        await client.aclose()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    slow = float(args[5]) if len(args) > 5 else 0.0
    raise SystemExit(asyncio.run(main(*args[:5], slow)))
