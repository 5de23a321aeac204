"""Every Redis key and channel name pricefeed uses, built from one namespace.

Nothing else in the code base spells a key: import `Keys` and ask it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "pricefeed"


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis names under one namespace (``PRICEFEED_NAMESPACE``)."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def latest(self) -> str:
        """Hash: ticker -> PriceUpdate JSON (the cache of latest prices)."""
        return f"{self.namespace}:latest"

    @property
    def prices(self) -> str:
        """Channel: one JSON object ``{TICKER: PriceUpdate}`` per producer tick."""
        return f"{self.namespace}:prices"

    @property
    def price_prefix(self) -> str:
        """Prefix of the per-ticker channels."""
        return f"{self.namespace}:price:"

    @property
    def price_pattern(self) -> str:
        """PSUBSCRIBE pattern matching every per-ticker channel."""
        return f"{self.namespace}:price:*"

    def price(self, ticker: str) -> str:
        """Channel: one PriceUpdate JSON per update of ``ticker``."""
        return f"{self.namespace}:price:{ticker}"

    @property
    def watchlist(self) -> str:
        """Set: the tickers the producer must produce."""
        return f"{self.namespace}:watchlist"

    def probe(self, instance: str) -> str:
        """Channel: a gateway's delivery probe, published to itself by gateway ``instance``
        when its subscription has been quiet (docs/RELIABILITY.md); no one else reads it."""
        return f"{self.namespace}:probe:{instance}"

    @property
    def control(self) -> str:
        """Channel: ``{"action": "add"|"remove", "ticker": ...}`` after a watchlist change."""
        return f"{self.namespace}:control"

    @property
    def seq(self) -> str:
        """String: the top of the seqs reserved so far (producers reserve blocks ahead)."""
        return f"{self.namespace}:seq"

    def reference(self, day: str) -> str:
        """Hash: ticker -> the first price the producer published on UTC ``day``
        (``YYYY-MM-DD``), the reference of ``day_change_percent`` where the source has none."""
        return f"{self.namespace}:reference:{day}"

    @property
    def watchlist_marker(self) -> str:
        """String: Unix time the watchlist was first filled in this Redis. Without it
        Redis lost its data (or is new), so an empty watchlist is refilled."""
        return f"{self.namespace}:watchlist:created"

    @property
    def lease(self) -> str:
        """String with TTL: the id of the one producer allowed to write (the lock)."""
        return f"{self.namespace}:producer:lease"

    @property
    def ticks(self) -> str:
        """Stream: the tick log, one entry ``<last seq>-<ms>`` -> ``map`` per tick."""
        return f"{self.namespace}:ticks"

    @property
    def epoch(self) -> str:
        """String: the random id of this dataset; a new one means the log restarted."""
        return f"{self.namespace}:epoch"

    @property
    def producer(self) -> str:
        """String with TTL: the live producer's id (its heartbeat), written only once the
        producer's first tick of its term has landed."""
        return f"{self.namespace}:producer"

    @property
    def producer_status(self) -> str:
        """String with TTL: JSON status of the live producer (source kind and state)."""
        return f"{self.namespace}:producer:status"

    def bars(self, interval: str, ticker: str) -> str:
        """Sorted set: the closed ``interval`` bars of ``ticker``, scored by start (seconds)."""
        return f"{self.namespace}:bars:{interval}:{ticker}"

    def bars_prefix(self, interval: str) -> str:
        """Prefix of the closed-bar sorted sets of ``interval`` (the ticker follows)."""
        return f"{self.namespace}:bars:{interval}:"

    def forming(self, interval: str) -> str:
        """Hash: ticker -> the ``interval`` bar still forming (bar JSON)."""
        return f"{self.namespace}:forming:{interval}"

    def bar_channel(self, interval: str) -> str:
        """Channel: ``{TICKER: bar}`` of the ``interval`` bars that just closed."""
        return f"{self.namespace}:bars:{interval}"

    @property
    def forming_seq(self) -> str:
        """String: the last seq folded into the forming bars as stored (the tick log after
        it is what a successor replays)."""
        return f"{self.namespace}:forming:seq"
