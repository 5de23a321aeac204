"""OHLC bars: the two intervals, the bar model and its JSON (README "Bars").

A bar is ``{"t": start, "o": open, "h": high, "l": low, "c": close, "n": count,
"v": volume}`` — the short keys of Massive's and Alpaca's bars. ``t`` is the bar's start in
Unix seconds, aligned to UTC boundaries of the interval; ``n`` is the number of updates
folded into it (always > 0); ``v`` is the summed trade size, or null when the source has
no sizes. Readers outside Redis (REST, SSE) also get ``"partial"``: true for the bar still
forming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.errors import CodecError

INTERVALS: Final[dict[str, int]] = {"1s": 1, "1m": 60}
"""Interval name -> width in seconds."""

MAX_BAR_BYTES: Final[int] = 512


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLC bar of one ticker at one interval."""

    t: int
    o: float
    h: float
    lo: float
    c: float
    n: int
    v: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON form, keys in the documented order."""
        return {"t": self.t, "o": self.o, "h": self.h, "l": self.lo, "c": self.c,
                "n": self.n, "v": self.v}


def encode_bar(bar: Bar) -> bytes:
    """A bar as its stored JSON."""
    return orjson.dumps(bar.to_dict())


def with_partial(raw: bytes, partial: bool) -> bytes:
    """A stored bar's JSON with ``"partial"`` appended, without decoding it."""
    return raw[:-1] + (b',"partial":true}' if partial else b',"partial":false}')


def _price(obj: dict[str, Any], name: str) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"bar field {name!r} must be a number")
    if not (math.isfinite(value) and value > 0):
        raise CodecError(f"bar field {name!r} must be finite and positive")
    return float(value)


def decode_bar(raw: bytes | str) -> Bar:
    """A stored bar; raises `CodecError` when malformed or its OHLC is inconsistent."""
    if len(raw) > MAX_BAR_BYTES:
        raise CodecError("bar payload is too large")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CodecError(f"bar is not valid JSON: {e}") from e
    return bar_from_obj(obj)


def bar_from_obj(obj: Any) -> Bar:
    """Validate a decoded bar object; raises `CodecError`."""
    if not isinstance(obj, dict):
        raise CodecError("a bar must be a JSON object")
    t, n, v = obj.get("t"), obj.get("n"), obj.get("v")
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < 10**11:
        raise CodecError("bar field 't' must be Unix seconds")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CodecError("bar field 'n' must be a positive integer")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                          or not math.isfinite(v) or v < 0):
        raise CodecError("bar field 'v' must be null or a non-negative number")
    bar = Bar(t, _price(obj, "o"), _price(obj, "h"), _price(obj, "l"), _price(obj, "c"), n,
              None if v is None else float(v))
    if not (bar.lo <= min(bar.o, bar.c) and max(bar.o, bar.c) <= bar.h):
        raise CodecError("bar OHLC is inconsistent (low <= open, close <= high)")
    return bar


def bar_start(timestamp: float, interval: str) -> int:
    """The start of the ``interval`` bar that holds ``timestamp`` (UTC-aligned)."""
    width = INTERVALS[interval]
    return int(timestamp // width) * width
