"""`pricefeed producer`: the producer process (issue 2, point 10).

SIGTERM or Ctrl+C sets the stop event; the runner stops its source, gives the lease up
(so a standby takes over at once) and the process exits within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from producer.runner import ProducerRunner, SourceConfigError
from producer.scripts import ScriptingRefused
from shared.logs import configure
from shared.settings import Settings, fail, load_or_exit, redacted_url
from shared.version import VERSION

log = logging.getLogger(__name__)

# A Redis that hangs (rather than refusing) fails a call after this long.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0


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
    except (SourceConfigError, ScriptingRefused) as e:
        fail(f"pricefeed producer: {e}")
    return 0


def connect(settings: Settings) -> aioredis.Redis:
    """A client for ``settings.redis_url``; it connects lazily, on first use.

    redis-py's own retries are off: the runner retries with our backoff and logs it.
    """
    return aioredis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S, retry=Retry(NoBackoff(), 0), **settings.redis_options,
    )


async def serve(settings: Settings) -> None:
    """The producer's main coroutine."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    redis = connect(settings)
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
