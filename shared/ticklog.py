"""The tick log ``NS:ticks``: its entry ids and entries (README "The tick log").

One entry per producer tick, written in the same atomic unit as the cache and the
publishes. Its id is ``<last seq>-<ms>``: the largest seq of the tick's updates, then the
producer's wall clock in milliseconds. Seqs strictly increase, so ids do too; and since
the first part is a seq, ``XRANGE NS:ticks <seq> <seq>`` finds the tick holding an update
whose seq is the tick's last, and ``XRANGE NS:ticks <seq+1> +`` is everything after it.
Its one field, ``map``, is the tick map exactly as published on ``NS:prices``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.codec import decode_map
from shared.errors import CodecError
from shared.models import PriceUpdate

MAP_FIELD: Final[bytes] = b"map"
_MAX_PART_DIGITS: Final[int] = 20  # a stream id part is an unsigned 64-bit integer


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One tick of the log: its position (the last seq), wall time and updates."""

    seq: int
    ms: int
    updates: dict[str, PriceUpdate]
    raw_map: bytes  # the tick map's JSON as stored

    @property
    def entry_id(self) -> str:
        """The stream id, ``<seq>-<ms>``."""
        return f"{self.seq}-{self.ms}"


def new_epoch() -> str:
    """A random dataset id for ``NS:epoch``: 16 hex digits."""
    return secrets.token_hex(8)


def _part(raw: str) -> int:
    if not (0 < len(raw) <= _MAX_PART_DIGITS) or not raw.isascii() or not raw.isdigit():
        raise CodecError(f"stream id part {raw[:24]!r} is not an unsigned integer")
    value = int(raw)
    if value >= 2**64:
        raise CodecError(f"stream id part {raw[:24]!r} is out of range")
    return value


def parse_entry_id(raw: bytes | str) -> tuple[int, int]:
    """``(seq, ms)`` of a log entry id; raises `CodecError` when it is not ``<int>-<int>``."""
    text = raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
    seq, sep, ms = text.partition("-")
    if not sep:
        raise CodecError(f"log entry id {text[:48]!r} is not <seq>-<ms>")
    return _part(seq), _part(ms)


def decode_entry(entry_id: bytes | str, fields: Mapping[Any, Any]) -> LogEntry:
    """A validated `LogEntry` from what XRANGE/XREAD returns; raises `CodecError`.

    The id's seq must be the largest seq of the tick, as the producer writes it.
    """
    seq, ms = parse_entry_id(entry_id)
    raw = fields.get(MAP_FIELD, fields.get(MAP_FIELD.decode()))
    if raw is None:
        raise CodecError(f"log entry {seq}-{ms} has no 'map' field")
    raw_map = raw.encode() if isinstance(raw, str) else bytes(raw)
    updates = decode_map(raw_map)
    if not updates or max(u.seq for u in updates.values()) != seq:
        raise CodecError(f"log entry {seq}-{ms} does not end at seq {seq}")
    return LogEntry(seq, ms, updates, raw_map)
