"""The baseline of the producer benchmark (docs/PERFORMANCE.md): the straightforward way to
write a tick.

Per update: build the PriceUpdate, JSON-encode it (orjson, as the rest of the project),
and queue PUBLISH + HSET on one MULTI/EXEC pipeline, plus the tick map; seq from one
INCRBY per tick. Written as well as that design allows: one round trip per tick, no
per-update awaits.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from producer.sources.base import Quote
from shared.codec import encode_map, encode_update
from shared.keys import Keys
from shared.models import PriceUpdate


class BaselinePublisher:
    """Writes ticks the straightforward way."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._previous: dict[str, float] = {}

    async def publish(self, quotes: Mapping[str, Quote]) -> None:
        """One tick: encode each update, pipeline PUBLISH + HSET per update in MULTI/EXEC."""
        last = self.redis.incrby(self.keys.seq, len(quotes))
        seq = last - len(quotes) + 1
        pipe = self.redis.pipeline(transaction=True)
        updates = []
        for ticker, quote in quotes.items():
            update = PriceUpdate.create(
                ticker, quote.price, self._previous.get(ticker), quote.timestamp, seq
            )
            seq += 1
            payload = encode_update(update)
            pipe.hset(self.keys.latest, ticker, payload)
            pipe.publish(self.keys.price(ticker), payload)
            self._previous[ticker] = update.price
            updates.append(update)
        pipe.publish(self.keys.prices, encode_map(updates))
        pipe.execute()
