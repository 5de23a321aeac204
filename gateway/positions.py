"""Log positions: an int on one server, a `Vector` of one per partition on a Cluster.

On one server a position is the tick log's last seq (README "Resume and continuity"). On a
Cluster each partition has its own seq, log and epoch (docs/CLUSTER.md), so a position is
one seq per partition, written ``v0.v1.….vP-1`` in an event id, and the id's epoch is
`cluster_epoch` of the partitions' epochs. The helpers here take either kind, so the hub
and the stream treat both alike; on one server they do exactly what ``max`` and ``>`` did.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Union

from shared.keys import partition_of


class Vector(tuple[int, ...]):
    """A Cluster position: component ``i`` is partition ``i``'s log position. Never empty;
    truthy even when every component is 0 (an empty dataset's snapshot is a position)."""

    __slots__ = ()

    def __str__(self) -> str:
        return ".".join(map(str, self))

    def at(self, index: int) -> int:
        return self[index]

    def of(self, ticker: str) -> int:
        """The position of ``ticker``'s partition."""
        return self[partition_of(ticker, len(self))]

    def replace(self, index: int, seq: int) -> Vector:
        """This position with partition ``index`` at ``seq``."""
        return Vector((*self[:index], seq, *self[index + 1:]))

    @classmethod
    def zero(cls, partitions: int) -> Vector:
        return cls((0,) * partitions)


Position = Union[int, Vector]  # noqa: UP007 - Vector is a tuple; X | Y at runtime is fine too


def join(a: Position, b: Position) -> Position:
    """The later of two positions (per partition on a Cluster); 0 (nothing) joins as
    the other one."""
    if isinstance(a, Vector):
        if isinstance(b, Vector):
            return a if a == b else Vector(map(max, a, b))
        return a
    if isinstance(b, Vector):
        return b
    return max(a, b)


def covered(pos: Position, ticker: str) -> int:
    """The seq of ``ticker`` that ``pos`` covers: an update at or below it is old."""
    if isinstance(pos, Vector):
        return pos.of(ticker)
    return pos


def component(pos: Position, index: int) -> int:
    """Partition ``index``'s part of ``pos`` (0 for the int 0, "nothing")."""
    return pos[index] if isinstance(pos, Vector) else pos


def cluster_epoch(epochs: Sequence[str]) -> str:
    """The epoch of a Cluster's event ids: the first 16 hex digits of SHA-256 of the
    partitions' epochs in partition order, joined by ``,`` (docs/CLUSTER.md "The gateway
    on a Cluster"); 16 hex digits like one server's, so a client's check is the same."""
    return hashlib.sha256(",".join(epochs).encode()).hexdigest()[:16]


def parse_vector(text: str, partitions: int) -> Vector | None:
    """``v0.v1.…`` with exactly ``partitions`` components of at most 19 digits; None else."""
    parts = text.split(".")
    if len(parts) != partitions or not all(_SEQ.fullmatch(p) for p in parts):
        return None
    return Vector(int(p) for p in parts)


_SEQ = re.compile(r"[0-9]{1,19}")
