"""A minimal publisher of the wire contract (SPEC "Wire contract"), for the gateway benchmark.

The benchmark's figures use the real producer (``python -m pricefeed producer``); this is
the fallback when the producer is not available, and it keeps the harness independent of the
simulator's cost. Per tick, one atomic MULTI/EXEC: the cache (``NS:latest``), the tick map on
``NS:prices`` and one message per ticker on ``NS:price:{T}``; ``seq`` from ``NS:seq``.
Ticks are scheduled on the wall clock so the offered rate does not drift.

    python -m bench.contract_publisher --redis-url redis://127.0.0.1:6379/0 \\
        --tickers AAPL,MSFT --interval 0.1
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import time

import redis

from shared.codec import encode_map, encode_update
from shared.keys import Keys
from shared.models import PriceUpdate, normalize_ticker

log = logging.getLogger("bench.publisher")


class ContractPublisher:
    """Random-walk prices for a fixed set of tickers, written as the contract says."""

    def __init__(self, client: redis.Redis, keys: Keys, tickers: list[str], seed: int) -> None:
        self.client, self.keys, self.tickers = client, keys, tickers
        self.rng = random.Random(seed)
        self.prices = {t: self.rng.uniform(50, 300) for t in tickers}

    def tick(self) -> None:
        last = int(self.client.incrby(self.keys.seq, len(self.tickers)))
        now = time.time()
        updates = []
        for i, t in enumerate(self.tickers):
            previous = self.prices[t]
            self.prices[t] = previous * (1 + self.rng.gauss(0, 0.001))
            updates.append(
                PriceUpdate.create(
                    t, self.prices[t], previous, now, last - len(self.tickers) + 1 + i
                )
            )
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.latest, mapping={u.ticker: encode_update(u) for u in updates})
        pipe.publish(self.keys.prices, encode_map(updates))
        for u in updates:
            pipe.publish(self.keys.price(u.ticker), encode_update(u))
        pipe.execute()


def run(publisher: ContractPublisher, interval_s: float, stop: list[bool]) -> None:
    """Tick on a fixed wall-clock schedule until ``stop[0]``; a late tick is not made up."""
    next_t = time.monotonic()
    while not stop[0]:
        try:
            publisher.tick()
        except redis.RedisError as e:
            log.warning("tick failed: %s", e)
        next_t += interval_s
        delay = next_t - time.monotonic()
        if delay < 0:
            next_t = time.monotonic()
        else:
            time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Publish the pricefeed wire contract at a fixed rate.")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--namespace", default="pricefeed")
    p.add_argument("--tickers", required=True, help="comma list")
    p.add_argument("--interval", type=float, default=0.5, help="seconds per tick")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    tickers = [normalize_ticker(t) for t in args.tickers.split(",") if t.strip()]
    stop = [False]

    def on_signal(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    client = redis.Redis.from_url(args.redis_url)
    client.sadd(Keys(args.namespace).watchlist, *tickers)
    try:
        run(
            ContractPublisher(client, Keys(args.namespace), tickers, args.seed), args.interval, stop
        )
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
