"""Every Redis key and channel name pricefeed uses, built from one namespace.

Nothing else in the code base spells a key: import `Keys` (one set of names) or `Layout`
(where each set lives) and ask it.

On one server every name is ``NS:<name>``. On a Redis Cluster the tickers are split into
partitions (docs/CLUSTER.md): partition ``i``'s names are ``NS:{p<i>}:<name>`` and the
names that span partitions (watchlist, control, config, the producers' registry) are
``NS:{meta}:<name>``; the ``{…}`` hash tag keeps each set in one slot, so one transaction
can write a partition's tick and ``SPUBLISH`` it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

DEFAULT_NAMESPACE = "pricefeed"
META_TAG: Final[str] = "{meta}"


def partition_tag(index: int) -> str:
    """The hash tag of partition ``index`` (docs/CLUSTER.md)."""
    return f"{{p{index}}}"


def partition_of(ticker: str, partitions: int) -> int:
    """The partition of ``ticker`` among ``partitions``: CRC-32 (IEEE, as zlib, Java's
    ``CRC32``, Go's ``crc32.ChecksumIEEE`` and Node's ``zlib.crc32`` compute it) of the
    ticker's UTF-8 bytes, modulo ``partitions`` (docs/CLUSTER.md)."""
    return zlib.crc32(ticker.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis names under one namespace (``PRICEFEED_NAMESPACE``), in one scope: ``""`` on
    one server, a partition's or the meta hash tag on a Cluster (see `Layout`).

    Only the names of a Keys' own role are meaningful in a tag: a partition's Keys gives the
    cache, channels, log, seq, epoch, bars, lease and heartbeat of that partition; the meta
    Keys gives the watchlist, control, config and the producers' registry."""

    namespace: str = DEFAULT_NAMESPACE
    scope: str = ""

    @property
    def base(self) -> str:
        """What every name of this scope starts with: ``NS`` or ``NS:{tag}``."""
        return f"{self.namespace}:{self.scope}" if self.scope else self.namespace

    @property
    def sharded(self) -> bool:
        """True on a Cluster: channels are shard channels (``SPUBLISH``/``SSUBSCRIBE``)."""
        return bool(self.scope)

    @property
    def latest(self) -> str:
        """Hash: ticker -> PriceUpdate JSON (the cache of latest prices)."""
        return f"{self.base}:latest"

    @property
    def prices(self) -> str:
        """Channel: one JSON object ``{TICKER: PriceUpdate}`` per producer tick."""
        return f"{self.base}:prices"

    @property
    def price_prefix(self) -> str:
        """Prefix of the per-ticker channels."""
        return f"{self.base}:price:"

    @property
    def price_pattern(self) -> str:
        """PSUBSCRIBE pattern matching every per-ticker channel."""
        return f"{self.base}:price:*"

    def price(self, ticker: str) -> str:
        """Channel: one PriceUpdate JSON per update of ``ticker``."""
        return f"{self.base}:price:{ticker}"

    @property
    def watchlist(self) -> str:
        """Set: the tickers the producer must produce."""
        return f"{self.base}:watchlist"

    def probe(self, instance: str) -> str:
        """Channel: a gateway's delivery probe, published to itself by gateway ``instance``
        when its subscription has been quiet (docs/RELIABILITY.md); no one else reads it."""
        return f"{self.base}:probe:{instance}"

    @property
    def control(self) -> str:
        """Channel: ``{"action": "add"|"remove", "ticker": ...}`` after a watchlist change."""
        return f"{self.base}:control"

    @property
    def seq(self) -> str:
        """String: the top of the seqs reserved so far (producers reserve blocks ahead)."""
        return f"{self.base}:seq"

    def reference(self, day: str) -> str:
        """Hash: ticker -> the first price the producer published on UTC ``day``
        (``YYYY-MM-DD``), the reference of ``day_change_percent`` where the source has none."""
        return f"{self.base}:reference:{day}"

    @property
    def watchlist_marker(self) -> str:
        """String: Unix time the watchlist was first filled in this Redis. Without it
        Redis lost its data (or is new), so an empty watchlist is refilled."""
        return f"{self.base}:watchlist:created"

    @property
    def lease(self) -> str:
        """String with TTL: the id of the one producer allowed to write (the lock)."""
        return f"{self.base}:producer:lease"

    @property
    def ticks(self) -> str:
        """Stream: the tick log, one entry ``<last seq>-<ms>`` -> ``map`` per tick."""
        return f"{self.base}:ticks"

    @property
    def epoch(self) -> str:
        """String: the random id of this dataset; a new one means the log restarted."""
        return f"{self.base}:epoch"

    @property
    def producer(self) -> str:
        """String with TTL: the live producer's id (its heartbeat), written only once the
        producer's first tick of its term has landed."""
        return f"{self.base}:producer"

    @property
    def producer_status(self) -> str:
        """String with TTL: JSON status of the live producer (source kind and state)."""
        return f"{self.base}:producer:status"

    def bars(self, interval: str, ticker: str) -> str:
        """Sorted set: the closed ``interval`` bars of ``ticker``, scored by start (seconds)."""
        return f"{self.base}:bars:{interval}:{ticker}"

    def bars_prefix(self, interval: str) -> str:
        """Prefix of the closed-bar sorted sets of ``interval`` (the ticker follows)."""
        return f"{self.base}:bars:{interval}:"

    def forming(self, interval: str) -> str:
        """Hash: ticker -> the ``interval`` bar still forming (bar JSON)."""
        return f"{self.base}:forming:{interval}"

    def bar_channel(self, interval: str) -> str:
        """Channel: ``{TICKER: bar}`` of the ``interval`` bars that just closed."""
        return f"{self.base}:bars:{interval}"

    @property
    def forming_seq(self) -> str:
        """String: the last seq folded into the forming bars as stored (the tick log after
        it is what a successor replays)."""
        return f"{self.base}:forming:seq"

    @property
    def config(self) -> str:
        """Hash (meta, Cluster only): ``partitions`` -> P, written by the first producer;
        every producer and gateway checks its own P against it."""
        return f"{self.base}:config"

    @property
    def producers(self) -> str:
        """Sorted set (meta, Cluster only): producer id -> Unix ms its registration
        expires; the live ones share the partitions (docs/CLUSTER.md)."""
        return f"{self.base}:producers"


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the names live: one server (``partitions == 0``), or ``partitions`` partitions
    on a Cluster plus the meta slot."""

    namespace: str = DEFAULT_NAMESPACE
    partitions: int = 0

    @property
    def clustered(self) -> bool:
        return self.partitions > 0

    @property
    def meta(self) -> Keys:
        """The names that span partitions (on one server: every name)."""
        return Keys(self.namespace, META_TAG if self.clustered else "")

    def partition(self, index: int) -> Keys:
        """Partition ``index``'s names (on one server: every name)."""
        if not self.clustered:
            return Keys(self.namespace)
        if not 0 <= index < self.partitions:
            raise ValueError(f"partition {index} outside 0..{self.partitions - 1}")
        return Keys(self.namespace, partition_tag(index))

    def all(self) -> list[Keys]:
        """Every partition's names, in partition order (one Keys on one server)."""
        if not self.clustered:
            return [Keys(self.namespace)]
        return [self.partition(i) for i in range(self.partitions)]

    def of(self, ticker: str) -> Keys:
        """The names of ``ticker``'s partition."""
        if not self.clustered:
            return Keys(self.namespace)
        return self.partition(partition_of(ticker, self.partitions))
