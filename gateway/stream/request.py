"""What a stream request asks for: its query parameters and its resume point, validated.

A bad value raises `BadRequest` (or ValueError) naming the parameter; the endpoint answers
422 with that line. Resume ids are those of README "Resume and continuity".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from gateway.notices import KINDS
from gateway.positions import Position, parse_vector
from shared.bars import INTERVALS
from shared.models import InvalidTicker, normalize_ticker

MAX_EVENT_ID_CHARS: Final[int] = 64
_EVENT_ID = re.compile(r"([0-9a-f]{16})-([0-9]{1,19})(?:-[0-9]{1,19})?")
_CLUSTER_ID = re.compile(r"([0-9a-f]{16})-([0-9.]+)(?:-([0-9.]+))?")


class BadRequest(Exception):
    """A query parameter is invalid; the message names it."""


def parse_tickers(raw: str | None, limit: int) -> frozenset[str] | None:
    """The ``?tickers=`` filter, validated; None for no filter."""
    if raw is None:
        return None
    parts = [p for p in raw.split(",") if p.strip()]
    if not parts:
        raise BadRequest("tickers: give at least one symbol, e.g. tickers=AAPL,MSFT")
    if len(parts) > limit:
        raise BadRequest(f"tickers: at most {limit} symbols per stream")
    try:
        return frozenset(normalize_ticker(p) for p in parts)
    except InvalidTicker as e:
        raise BadRequest(f"tickers: {e}") from e


def parse_max_hz(raw: str | None, *ceilings: float | None) -> float | None:
    """The client's ``?max_hz=``, capped by the token's claim and ``PRICEFEED_MAX_HZ``."""
    wanted: float | None = None
    if raw is not None:
        try:
            wanted = float(raw)
        except ValueError:
            wanted = math.nan
        if not (math.isfinite(wanted) and 0.1 <= wanted <= 1000):
            raise BadRequest("max_hz: give events per second between 0.1 and 1000")
    caps = [c for c in (wanted, *ceilings) if c is not None]
    return min(caps) if caps else None


def parse_bars(raw: str | None) -> str | None:
    """The ``?bars=`` interval (``1s`` or ``1m``), or None for no bar events."""
    if raw is None:
        return None
    if raw not in INTERVALS:
        raise BadRequest(f"bars: expected one of {', '.join(INTERVALS)}")
    return raw


def parse_kinds(raw: str | None) -> frozenset[str] | None:
    """The ``?events=`` list (`gateway.notices`); raises ValueError naming an unknown kind."""
    if raw is None:
        return None
    kinds = frozenset(k.strip() for k in raw.split(",") if k.strip())
    unknown = kinds - KINDS
    if unknown or not kinds:
        raise ValueError(f"events: give any of {', '.join(sorted(KINDS))}, comma-separated")
    return kinds


def parse_replay(raw: str | None) -> bool:
    """``?replay=all`` asks for every missed tick; absent, the default (latest values)."""
    if raw is None:
        return False
    if raw != "all":
        raise BadRequest("replay: the only value is 'all' (every missed tick, in order)")
    return True


@dataclass(frozen=True, slots=True)
class EventId:
    """A parsed event id: the epoch and the log position the client reached."""

    epoch: str
    pos: Position


def parse_event_id(raw: str | None, partitions: int = 0) -> EventId | None:
    """The resume point of ``Last-Event-ID``; None when it is not one of ours (ASCII
    ``<16 hex>-<digits>[-<digits>]`` of at most `MAX_EVENT_ID_CHARS` characters; on a
    Cluster of ``partitions`` partitions each position is ``v0.….vP-1``)."""
    if raw is None:
        return None
    text = raw.strip()
    if partitions:
        return _cluster_event_id(text, partitions)
    if len(text) > MAX_EVENT_ID_CHARS or not text.isascii():
        return None
    match = _EVENT_ID.fullmatch(text)
    if match is None:
        return None
    return EventId(match[1], int(match[2]))


def _cluster_event_id(text: str, partitions: int) -> EventId | None:
    # Two vectors of at most 19 digits and a dot per partition, the epoch and two dashes.
    if len(text) > 18 + 40 * partitions or not text.isascii():
        return None
    match = _CLUSTER_ID.fullmatch(text)
    if match is None:
        return None
    pos = parse_vector(match[2], partitions)
    prev = match[3]
    if pos is None or (prev is not None and prev != "0"
                       and parse_vector(prev, partitions) is None):
        return None
    return EventId(match[1], pos)


@dataclass(frozen=True, slots=True)
class Opening:
    """How a stream starts: from scratch, from a resume point, or with a reset."""

    last: EventId | None  # the client's resume point, when it gave a usable one
    reset: bool  # it gave an id that cannot be resumed (or parsed)
    replay_all: bool


def opening_of(raw_id: str | None, replay_all: bool, partitions: int = 0) -> Opening:
    """The `Opening` for the ``Last-Event-ID`` given (header or ``?last_event_id=``)."""
    last = parse_event_id(raw_id, partitions)
    return Opening(last, reset=raw_id is not None and last is None, replay_all=replay_all)
