"""Encoding and decoding of the wire format (README.md, "The Redis contract").

Every malformed input — bad JSON, a missing or wrongly typed field, a non-finite or
non-positive price, an oversized payload — raises `CodecError` and nothing else, so a
reader can skip one bad message with one ``except``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from shared.errors import CodecError
from shared.models import PriceUpdate, is_positive_finite, is_valid_ticker

# One update is ~200 bytes; a tick map of 10,000 tickers ~2.2 MB. Larger is hostile.
MAX_UPDATE_BYTES: Final[int] = 4 * 1024
MAX_MAP_BYTES: Final[int] = 8 * 1024 * 1024
MAX_CONTROL_BYTES: Final[int] = 1024
CONTROL_ACTIONS: Final[frozenset[str]] = frozenset({"add", "remove"})
_DIRECTIONS: Final[frozenset[str]] = frozenset({"up", "down", "flat"})


def encode_update(update: PriceUpdate) -> bytes:
    """One PriceUpdate as JSON bytes."""
    return orjson.dumps(update.to_dict())


def encode_map(updates: Iterable[PriceUpdate]) -> bytes:
    """A tick's updates as one JSON object keyed by ticker."""
    return orjson.dumps({u.ticker: u.to_dict() for u in updates})


def _load(payload: bytes | str, limit: int) -> Any:
    if not isinstance(payload, (bytes, bytearray, memoryview, str)):
        raise CodecError(f"payload must be bytes or str, not {type(payload).__name__}")
    if len(payload) > limit:
        raise CodecError(f"payload of {len(payload)} bytes exceeds the limit of {limit}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise CodecError(f"payload is not valid JSON: {e}") from e


def _number(obj: Mapping[str, Any], name: str) -> float:
    value = obj.get(name)
    # bool is an int subclass; a price of `true` is malformed.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError(f"field {name!r} must be a number")
    return float(value)


def update_from_obj(obj: Any) -> PriceUpdate:
    """Validate a decoded JSON object and build the PriceUpdate it describes."""
    if not isinstance(obj, dict):
        raise CodecError("a price update must be a JSON object")
    ticker = obj.get("ticker")
    if not isinstance(ticker, str) or not is_valid_ticker(ticker):
        raise CodecError("field 'ticker' is missing or not a valid symbol")
    price = _number(obj, "price")
    previous = _number(obj, "previous_price")
    if not (is_positive_finite(price) and is_positive_finite(previous)):
        raise CodecError(f"{ticker}: prices must be finite and positive")
    timestamp = _number(obj, "timestamp")
    if not (timestamp == timestamp and 0 <= timestamp < 1e11):  # finite, in Unix seconds
        raise CodecError(f"{ticker}: field 'timestamp' must be Unix seconds")
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise CodecError(f"{ticker}: field 'seq' must be a non-negative integer")
    _number(obj, "change")
    _number(obj, "change_percent")
    if obj.get("direction") not in _DIRECTIONS:
        raise CodecError(f"{ticker}: field 'direction' must be up, down or flat")
    return PriceUpdate(ticker, price, previous, timestamp, seq, _reference(obj, ticker))


def _reference(obj: Mapping[str, Any], ticker: str) -> float | None:
    """The optional ``reference_price`` (with its ``day_change_percent``): absent in
    updates written before the field existed, so absent or null means none."""
    if obj.get("reference_price") is None:
        return None
    reference = _number(obj, "reference_price")
    if not is_positive_finite(reference):
        raise CodecError(f"{ticker}: field 'reference_price' must be finite and positive")
    _number(obj, "day_change_percent")
    return reference


def decode_update(payload: bytes | str) -> PriceUpdate:
    """One PriceUpdate from its JSON; raises `CodecError` when malformed."""
    return update_from_obj(_load(payload, MAX_UPDATE_BYTES))


def decode_map(payload: bytes | str) -> dict[str, PriceUpdate]:
    """A tick's ``{TICKER: PriceUpdate}`` map; every entry must be valid and keyed by its ticker."""
    obj = _load(payload, MAX_MAP_BYTES)
    if not isinstance(obj, dict):
        raise CodecError("a tick message must be a JSON object keyed by ticker")
    out: dict[str, PriceUpdate] = {}
    for key, value in obj.items():
        update = update_from_obj(value)
        if update.ticker != key:
            raise CodecError(f"key {key!r} holds an update for {update.ticker!r}")
        out[key] = update
    return out


def encode_control(action: str, ticker: str) -> bytes:
    """A watchlist control message."""
    return orjson.dumps({"action": action, "ticker": ticker})


def decode_control(payload: bytes | str) -> tuple[str, str]:
    """``(action, ticker)`` from a control message; raises `CodecError` when malformed."""
    obj = _load(payload, MAX_CONTROL_BYTES)
    if not isinstance(obj, dict):
        raise CodecError("a control message must be a JSON object")
    action, ticker = obj.get("action"), obj.get("ticker")
    # A list or object is unhashable: test the type before the set membership.
    if not isinstance(action, str) or action not in CONTROL_ACTIONS:
        raise CodecError(f"unknown control action {action!r}")
    if not isinstance(ticker, str) or not is_valid_ticker(ticker):
        raise CodecError("control message has no valid 'ticker'")
    return str(action), ticker
