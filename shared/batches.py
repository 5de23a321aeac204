"""What a price subscriber yields (`Batch`), and the two rules every subscriber applies on
any topology: a message is kept only when it is newer, by ``seq``, than what is held for
its ticker (`fresh`); a changed epoch means a new dataset (`Dataset`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.codec import decode_map
from shared.keys import partition_of
from shared.models import PriceUpdate


@dataclass(frozen=True, slots=True)
class Batch:
    """Updates keyed by ticker. ``snapshot`` is True for the full state read from the
    cache (the first batch, and the first after every reconnect); False for a live tick.
    ``reset`` is True for the snapshot of a new dataset (the epoch changed): drop what you
    hold *of what this batch covers* first, it belongs to another dataset.

    What a snapshot covers: on one server, and in the first batch on a Cluster, every
    ticker (``partitions`` is None). On a Cluster a later snapshot (after a node was lost,
    a failover, a slot moved, or a partition's epoch changed) covers only ``partitions``,
    the partitions it was read for, out of ``partition_count`` (docs/CLUSTER.md
    "Reading"); `covers` says whether a ticker is one of them."""

    updates: Mapping[str, PriceUpdate]
    snapshot: bool
    reset: bool = False
    partitions: frozenset[int] | None = None
    partition_count: int = 0

    def covers(self, ticker: str) -> bool:
        """True when this (snapshot) batch speaks for ``ticker``: a reset drops it."""
        if self.partitions is None:
            return True
        return partition_of(ticker, self.partition_count) in self.partitions


class Dataset:
    """The epoch last read, kept across sessions: a Redis that comes back wiped, with a
    fresh producer whose seqs start over, must give a reset, not a snapshot whose lower
    seqs a reader would drop as old. None: no epoch (nothing written, or a wiped Redis).
    On a Cluster each partition has its own (docs/CLUSTER.md "Names")."""

    def __init__(self) -> None:
        self.epoch: Any = None

    def changed(self, epoch: Any) -> bool:
        """Note ``epoch``; True when it replaces another one (None replaces one too)."""
        changed = self.epoch is not None and epoch != self.epoch
        self.epoch = epoch
        return changed


def fresh(payload: Any, wanted: frozenset[str] | None, seen: dict[str, int]
          ) -> dict[str, PriceUpdate]:
    """The updates of one tick message that are wanted and newer than what was seen;
    raises `CodecError` for a malformed message."""
    tick = decode_map(payload)
    out: dict[str, PriceUpdate] = {}
    for ticker, update in tick.items():
        if wanted is not None and ticker not in wanted:
            continue
        if update.seq <= seen.get(ticker, -1):
            continue
        seen[ticker] = update.seq
        out[ticker] = update
    return out


def seqs(state: Mapping[str, PriceUpdate]) -> dict[str, int]:
    """The seq held per ticker after a snapshot of ``state``."""
    return {t: u.seq for t, u in state.items()}
