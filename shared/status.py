"""The producer's status in ``NS:producer:status``, and what it means for a reader.

The live producer rewrites it every second beside its lease (a JSON object, TTL as the
lease). Keys: ``source`` (``simulator``, ``massive-rest``, ``massive-websocket``),
``state`` (below), ``feed`` (``simulated``, ``real time``, ``delayed 15 min`` or null
while unknown), ``reference`` (what ``day_change_percent`` is measured from), ``detail``
(one safe line about the last problem, or null) and ``last_trade`` (Unix seconds of the
newest trade seen, for real data). The gateway's readiness, its ``source`` stream event
and ``pricefeed up`` all read it through this module.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

# States in which a source delivers what the market has: a closed market is quiet, not broken.
PRODUCING_STATES: Final[frozenset[str]] = frozenset({"ok", "market_closed"})

STATE_TEXT: Final[dict[str, str]] = {
    "ok": "live",
    "market_closed": "market closed",
    "starting": "starting",
    "connecting": "connecting",
    "unreachable": "source unreachable",
    "auth_rejected": "key rejected",
    "rate_limited": "rate limited",
    "upstream_error": "source error",
    "bad_response": "source error",
    "error": "source error",
    "stopped": "stopped",
    "no_producer": "no producer running",
}

SOURCE_TEXT: Final[dict[str, str]] = {
    "simulator": "simulator",
    "massive-rest": "Massive REST",
    "massive-websocket": "Massive websocket",
}

# How the gateway's 503 reason starts when Redis and the producer work but the source
# gives nothing: `pricefeed up` and the tests tell it apart from a broken system by it.
SOURCE_DOWN: Final[str] = "price source not producing"

# A real-data source that saw no trade for this long calls the market closed. It must be
# well above the 15 minutes of a delayed plan, whose newest trade is always that old.
QUIET_AFTER_S: Final[float] = 30 * 60.0


def feed_of_lag(lag_s: float) -> str | None:
    """``real time`` or ``delayed 15 min`` from the age of the newest trade; None when the
    age fits neither (a quiet market says nothing about the plan)."""
    if lag_s < 120:
        return "real time"
    if 14 * 60 <= lag_s <= 20 * 60:
        return "delayed 15 min"
    return None


def problem(status: Mapping[str, Any] | None) -> str | None:
    """Why the source produces nothing, in one line; None when it produces (or the
    producer is too old to say)."""
    if status is None:
        return None
    state = status.get("state")
    if not isinstance(state, str) or state in PRODUCING_STATES:
        return None
    text = STATE_TEXT.get(state, state)
    detail = status.get("detail")
    return f"{text} ({detail})" if isinstance(detail, str) and detail else text


def describe(status: Mapping[str, Any] | None) -> str:
    """One line naming the source and its state, e.g. ``Massive REST, delayed 15 min``."""
    if status is None:
        return "unknown source (no status from the producer)"
    kind = status.get("source")
    name = SOURCE_TEXT.get(kind, str(kind)) if isinstance(kind, str) else "unknown source"
    if kind == "simulator":
        return "simulator (simulated prices, not market data)"
    parts = [name]
    feed = status.get("feed")
    if isinstance(feed, str):
        parts.append(feed)
    state = status.get("state")
    why = problem(status)
    if why is not None:
        parts.append(why)
    elif state == "market_closed":
        parts.append("market closed" + _last_trade(status.get("last_trade")))
    return ", ".join(parts)


def _last_trade(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return ""
    return " — last trade " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value))
