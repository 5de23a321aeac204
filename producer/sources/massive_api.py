"""Talking to Massive's REST snapshot endpoint through the SDK, and reading its answers.

Everything here is blocking or pure: `SnapshotClient.fetch` runs in a worker thread,
`parse_snapshot` turns the JSON into quotes, `classify` turns any failure into a state
and one safe line. The poll loop around them is `producer.sources.massive_rest.MassiveRestSource`;
the 1 min backfill (`producer.sources.massive_backfill`) uses the same failure handling.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from massive import RESTClient
from massive.exceptions import BadResponse
from massive.rest.models import TickerSnapshot
from urllib3.exceptions import HTTPError, InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from producer.sources.base import Quote

# A plain string on purpose: the SDK formats a SnapshotMarketType enum member into the
# path as "SnapshotMarketType.STOCKS".
SNAPSHOT_MARKET: Final[str] = "stocks"
DEFAULT_BASE_URL: Final[str] = "https://api.massive.com"


class MalformedSnapshot(ValueError):
    """The snapshot answer is not the JSON document the API documents."""


class StatusError(MaxRetryError):
    """An HTTP error status from Massive, with its Retry-After in seconds when given."""

    def __init__(self, pool: Any, url: str | None, status: int, retry_after_s: float | None,
                 code: str | None = None):
        super().__init__(pool, url, ResponseError(f"HTTP {status}"))
        self.status = status
        self.retry_after_s = retry_after_s
        self.code = code  # the answer's "status" field, e.g. NOT_AUTHORIZED


class NoRetry(Retry):
    """Retry nothing inside the SDK; raise `StatusError` on any 4xx/5xx answer.

    The SDK's own policy retries 429 and 5xx in the calling thread and sleeps out
    Retry-After there, where stopping the producer cannot interrupt it, and its
    `MaxRetryError` says neither the status nor Retry-After. Our poll loop backs off
    instead, between requests, where a stop cancels the wait.
    """

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("total", 0)
        kw.setdefault("status_forcelist", range(400, 600))
        super().__init__(**kw)

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None, _pool: Any = None,
                  _stacktrace: Any = None) -> NoRetry:
        if response is not None and error is None and response.status >= 400:
            raise StatusError(_pool, url, response.status, _retry_after_s(self, response),
                              _error_code(response))
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _error_code(response: Any) -> str | None:
    """The ``"status"`` word of an error answer (``NOT_AUTHORIZED``), when it has one.

    Only that word is kept: the rest of the body is never logged.
    """
    try:
        document = json.loads(response.data[:4096])
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError):
        return None
    code = document.get("status") if isinstance(document, dict) else None
    if isinstance(code, str) and len(code) <= 40 and code.replace("_", "").isalpha():
        return code.upper()
    return None


def _retry_after_s(retry: Retry, response: Any) -> float | None:
    try:
        seconds = retry.get_retry_after(response)
    except (InvalidHeader, ValueError, OverflowError):
        return None
    return None if seconds is None else max(0.0, float(seconds))


class SnapshotClient:
    """The SDK's `RESTClient` built the way this service needs it."""

    def __init__(self, api_key: str, base_url: str | None, timeout_s: float) -> None:
        # The key is passed explicitly: the SDK's default is os.getenv() evaluated once,
        # when `massive` was imported.
        self._rest = RESTClient(
            api_key=api_key,
            base=base_url or DEFAULT_BASE_URL,
            connect_timeout=min(timeout_s, 5.0),
            read_timeout=timeout_s,
            retries=0,
            pagination=False,
            connection_pool_kw={"retries": NoRetry()},
        )

    def fetch(self, tickers: Sequence[str]) -> Any:
        """All ``tickers`` in one request; the decoded JSON document. Blocking."""
        response = self._rest.get_snapshot_all(SNAPSHOT_MARKET, tickers=list(tickers), raw=True)
        try:
            return json.loads(response.data)
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedSnapshot(f"the snapshot answer is not JSON ({type(e).__name__})") from e

    def close(self) -> None:
        """Close pooled connections."""
        self._rest.client.clear()


def to_seconds(value: object) -> float | None:
    """A Unix time in s, ms, µs or ns (told apart by magnitude) as float seconds.

    None when ``value`` is not a positive finite number. Thresholds: seconds stay below
    1e11 until the year 5138, and each finer unit is 1000 times larger.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        return None
    for limit, scale in ((1e11, 1.0), (1e14, 1e3), (1e17, 1e6)):
        if number < limit:
            return number / scale
    return number / 1e9


def _price(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    price = float(value)
    return price if math.isfinite(price) and price > 0 else None


def quote_of(snapshot: TickerSnapshot) -> Quote | None:
    """Price of the last trade at its SIP time (else the snapshot's ``updated``), with the
    previous day's close as the reference of the day's change (else the day's open)."""
    trade = snapshot.last_trade
    if trade is None:
        return None
    price = _price(trade.price)
    timestamp = to_seconds(trade.sip_timestamp) or to_seconds(snapshot.updated)
    if price is None or timestamp is None:
        return None
    return Quote(price, timestamp, reference=_reference(snapshot))


def _reference(snapshot: TickerSnapshot) -> float | None:
    for bar, field in ((snapshot.prev_day, "close"), (snapshot.day, "open")):
        value = _price(getattr(bar, field, None)) if bar is not None else None
        if value is not None:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One answer: the quotes it priced, and why the other returned tickers were skipped."""

    quotes: dict[str, Quote]
    skipped: dict[str, str]


def parse_snapshot(document: Any, wanted: Sequence[str]) -> Snapshot:
    """Quotes of the ``wanted`` tickers; a bad entry skips that ticker only."""
    if not isinstance(document, Mapping):
        raise MalformedSnapshot("the snapshot answer is not a JSON object")
    entries = document.get("tickers") or []
    if not isinstance(entries, list):
        raise MalformedSnapshot("'tickers' in the snapshot answer is not a list")
    wanted_set = set(wanted)
    quotes: dict[str, Quote] = {}
    skipped: dict[str, str] = {}
    for entry in entries:
        ticker = entry.get("ticker") if isinstance(entry, Mapping) else None
        if not isinstance(ticker, str) or ticker not in wanted_set:
            continue
        if "lastTrade" not in entry:
            skipped[ticker] = "no last trade"
            continue
        try:
            quote = quote_of(TickerSnapshot.from_dict(entry))
        except (AttributeError, TypeError, ValueError):
            quote = None
        if quote is None:
            skipped[ticker] = "a malformed last trade"
        else:
            quotes[ticker] = quote
    return Snapshot(quotes, skipped)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed poll: the source state it puts us in and a line safe to log."""

    state: str
    detail: str
    retry_after_s: float | None = None


_AUTH_WORDS: Final = ("api key", "apikey", "not_authorized", "not authorized", "unauthorized")


def classify(error: BaseException) -> Failure:
    """What a failed snapshot request means for the poller. Never echoes the key."""
    if isinstance(error, StatusError):
        return _classify_status(error)
    if isinstance(error, MalformedSnapshot):
        return Failure("bad_response", str(error))
    if isinstance(error, BadResponse):
        # A non-200 answer our NoRetry let through (a 2xx other than 200, say).
        body = str(error)[:200].lower()
        if any(word in body for word in _AUTH_WORDS):
            return Failure("auth_rejected", "the API key was rejected")
        return Failure("upstream_error", "unexpected answer from Massive")
    if isinstance(error, MaxRetryError):
        reason = error.reason
        return Failure("unreachable", f"cannot reach Massive ({type(reason).__name__})")
    if isinstance(error, HTTPError | OSError | TimeoutError):
        return Failure("unreachable", f"cannot reach Massive ({type(error).__name__})")
    return Failure("error", f"unexpected {type(error).__name__}")


# What a plan without the snapshot endpoint still allows (massive.com/pricing).
PLAN_HINT: Final = (
    "Massive answered 403 NOT_AUTHORIZED: the key is valid but its plan does not include "
    "the stocks snapshot endpoint (all tickers' last trade), which pricefeed polls; the "
    "free plan allows REST at 5 calls a minute and delayed data, not this endpoint. "
    "Upgrade the plan, or unset MASSIVE_API_KEY to use the simulator"
)


def _classify_status(error: StatusError) -> Failure:
    status = error.status
    if status == 403 and error.code == "NOT_AUTHORIZED":
        return Failure("plan_missing", PLAN_HINT)
    if status in (401, 403):
        return Failure("auth_rejected", f"Massive rejected the API key (HTTP {status})")
    if status == 429:
        return Failure("rate_limited", "Massive rate limit hit (HTTP 429)", error.retry_after_s)
    if status >= 500:
        return Failure("upstream_error", f"Massive server error (HTTP {status})",
                       error.retry_after_s)
    return Failure("upstream_error", f"Massive refused the request (HTTP {status})")


def adopt_sdk_loggers() -> None:
    """Route the SDK's log lines through our one format only.

    `massive` gives its "RESTClient" and "WebSocketClient" loggers their own stdout
    handler at import, so every SDK line came out twice, in two formats.
    """
    for name in ("RESTClient", "WebSocketClient"):
        logging.getLogger(name).handlers.clear()
