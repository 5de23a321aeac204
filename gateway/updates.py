"""An update as the gateway holds it: its seq and its JSON, encoded once on arrival."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class EncodedUpdate(NamedTuple):
    """One ticker's `shared.models.PriceUpdate`: its seq (a tick-log position) and its JSON
    bytes, encoded once for every client and every REST answer."""

    seq: int
    json: bytes


def encode_updates(items: Mapping[str, EncodedUpdate]) -> bytes:
    """``{TICKER: PriceUpdate}`` JSON built from already-encoded updates (no re-encoding)."""
    return b"{" + b",".join(b'"%s":%s' % (t.encode(), j) for t, (_, j) in items.items()) + b"}"
