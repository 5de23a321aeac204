"""`pricefeed producer`: the producer process.

SIGTERM or Ctrl+C sets the stop event; the runner stops its source, gives the lease up
(so a standby takes over at once) and the process exits within a second. On a Redis
Cluster (``redis+cluster://``) the runner is `producer.cluster_runner.ClusterRunner`: the
same, per partition (docs/CLUSTER.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from pricefeed.process import fail
from producer.cluster_runner import ClusterRunner
from producer.partitions import PartitionsMismatch
from producer.runner import ProducerRunner, SourceConfigError
from producer.scripts import ScriptingRefused
from shared.logs import configure
from shared.redisio import SERVICE, cluster_topology, connect, redacted_url
from shared.settings import Settings, load_or_exit
from shared.version import VERSION

log = logging.getLogger(__name__)

def main(argv: list[str]) -> int:
    """Run the producer until SIGTERM or Ctrl+C; the exit status."""
    parser = argparse.ArgumentParser(
        prog="pricefeed producer",
        description="Run the producer: simulated (or Massive) prices into Redis. "
        "Configured by environment variables (REDIS_URL, PRICEFEED_*, MASSIVE_API_KEY).",
    )
    parser.parse_args(argv)
    settings = load_or_exit()
    if len(settings.tickers) > settings.max_watchlist:
        fail(f"pricefeed producer: PRICEFEED_TICKERS lists {len(settings.tickers)} tickers, "
             f"more than PRICEFEED_MAX_WATCHLIST={settings.max_watchlist}: shorten the list "
             "or raise the cap")
    configure(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except (SourceConfigError, ScriptingRefused, PartitionsMismatch) as e:
        fail(f"pricefeed producer: {e}")
    return 0


async def serve(settings: Settings) -> None:
    """The producer's main coroutine."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.clustered:
        await serve_cluster(settings, stop)
        return
    # redis-py's own retries are off (`SERVICE`): the runner retries with its backoff and
    # logs it; a Redis that hangs fails a call after the profile's socket timeout.
    redis = connect(settings, SERVICE)
    try:
        runner = ProducerRunner(settings, redis)
        log.info(
            "producer %s (pricefeed %s) starting: Redis %s, namespace %r, tick %.3gs",
            runner.owner_id, VERSION, redacted_url(settings.redis_url), settings.namespace,
            settings.tick_interval_s,
        )
        await runner.run(stop)
    finally:
        await redis.aclose()
        log.info("producer stopped")


async def serve_cluster(settings: Settings, stop: asyncio.Event) -> None:
    """The producer on a Redis Cluster: one client per primary, the partitions shared."""
    topology = cluster_topology(settings, SERVICE)
    try:
        runner = ClusterRunner(settings, topology)
        log.info(
            "producer %s (pricefeed %s) starting: Redis Cluster %s, namespace %r, "
            "%d partitions, tick %.3gs", runner.owner_id, VERSION,
            redacted_url(settings.redis_url), settings.namespace, settings.partitions,
            settings.tick_interval_s,
        )
        await runner.run(stop)
    finally:
        await topology.aclose()
        log.info("producer stopped")
