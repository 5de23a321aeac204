"""Writing prices into Redis the way the producer does (one atomic unit per tick), for
tests that need a feed without depending on the producer's own code."""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis

from shared.codec import encode_map, encode_update
from shared.keys import Keys
from shared.models import PriceUpdate
from shared.ticklog import new_epoch


class TickWriter:
    """Writes ticks of ``prices`` into Redis: the log entry, the cache hash and the
    channels, under the dataset's epoch."""

    def __init__(self, client: redis.Redis, keys: Keys, prices: Mapping[str, float],
                 references: Mapping[str, float] | None = None) -> None:
        self.client = client
        self.keys = keys
        self.prices = dict(prices)
        self.references = dict(references or {})  # the day's reference per ticker, if any
        self.seq = 0

    def tick(
        self, moves: Mapping[str, float] | None = None, publish: bool = True
    ) -> dict[str, PriceUpdate]:
        """One tick: every ticker moves by its factor in ``moves`` (default +0.1 %)."""
        updates = {}
        for ticker, previous in self.prices.items():
            factor = (moves or {}).get(ticker, 1.001)
            self.seq += 1
            updates[ticker] = PriceUpdate.create(
                ticker, previous * factor, previous, time.time(), self.seq,
                self.references.get(ticker))
            self.prices[ticker] = updates[ticker].price
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.keys.ticks, {"map": encode_map(updates.values())},
                  id=f"{self.seq}-{int(time.time() * 1000)}")
        pipe.set(self.keys.epoch, new_epoch(), nx=True)
        for update in updates.values():
            pipe.hset(self.keys.latest, update.ticker, encode_update(update))
        pipe.set(self.keys.seq, self.seq)
        if publish:
            for update in updates.values():
                pipe.publish(self.keys.price(update.ticker), encode_update(update))
            pipe.publish(self.keys.prices, encode_map(updates.values()))
        pipe.execute()
        return updates
