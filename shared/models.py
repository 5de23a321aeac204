"""The price update model and ticker symbols."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

Direction = Literal["up", "down", "flat"]

TICKER_PATTERN: Final[str] = r"^[A-Z][A-Z0-9.-]{0,9}$"
_TICKER_RE: Final = re.compile(TICKER_PATTERN)

# The producer status's ``state`` while Redis refuses its ticks for lack of memory
# (``maxmemory`` reached under ``noeviction``); readiness reports it.
OUT_OF_MEMORY_STATE: Final[str] = "redis out of memory"


class InvalidTicker(ValueError):
    """A string that is not an acceptable ticker symbol."""


def is_valid_ticker(symbol: str) -> bool:
    """True when ``symbol`` is already a normalised, valid ticker."""
    return isinstance(symbol, str) and _TICKER_RE.fullmatch(symbol) is not None


def normalize_ticker(raw: object) -> str:
    """Trim and upper-case ``raw``; raise `InvalidTicker` unless it matches TICKER_PATTERN.

    ``fullmatch`` (not ``match``) so a trailing newline cannot slip through ``$``.
    """
    if not isinstance(raw, str) or len(raw) > 64:
        raise InvalidTicker("ticker must be a string of at most 10 characters")
    symbol = raw.strip().upper()
    if _TICKER_RE.fullmatch(symbol) is None:
        raise InvalidTicker(
            "ticker must be 1-10 characters: a letter, then letters, digits, '.' or '-'"
        )
    return symbol


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """One price of one ticker, as stored in the cache and sent on every channel.

    ``change``, ``change_percent`` and ``direction`` are derived, never stored; so is
    ``day_change_percent``, the change since ``reference_price`` (the previous close for
    Massive, the first price of the UTC day for the simulator: README, "The Redis
    contract"). An update without a reference (written by an older producer) has neither.
    """

    ticker: str
    price: float
    previous_price: float
    timestamp: float
    seq: int
    reference_price: float | None = None

    @property
    def change(self) -> float:
        """Absolute change from the previous price, rounded to 4 decimals."""
        return round(self.price - self.previous_price, 4)

    @property
    def change_percent(self) -> float:
        """Change relative to the previous price in percent; 0.0 when that price is 0."""
        if self.previous_price == 0:
            return 0.0
        return round(self.change / self.previous_price * 100, 4)

    @property
    def direction(self) -> Direction:
        """``"up"``, ``"down"`` or ``"flat"``."""
        if self.price > self.previous_price:
            return "up"
        if self.price < self.previous_price:
            return "down"
        return "flat"

    @property
    def day_change_percent(self) -> float | None:
        """Change since ``reference_price`` in percent, rounded to 4 decimals; None without one."""
        ref = self.reference_price
        if ref is None or ref == 0:
            return None
        return round((self.price - ref) / ref * 100, 4)

    def to_dict(self) -> dict[str, Any]:
        """The wire form, keys in the order of the contract (the reference pair last)."""
        out: dict[str, Any] = {
            "ticker": self.ticker,
            "price": self.price,
            "previous_price": self.previous_price,
            "timestamp": self.timestamp,
            "change": self.change,
            "change_percent": self.change_percent,
            "direction": self.direction,
            "seq": self.seq,
        }
        if self.reference_price is not None:
            out["reference_price"] = self.reference_price
            out["day_change_percent"] = self.day_change_percent
        return out

    @classmethod
    def create(
        cls, ticker: str, price: float, previous_price: float | None, timestamp: float, seq: int,
        reference_price: float | None = None,
    ) -> PriceUpdate:
        """Build an update with the contract's rounding; the first update of a ticker is flat."""
        rounded = round(price, 2)
        prev = rounded if previous_price is None else round(previous_price, 2)
        ref = None if reference_price is None else round(reference_price, 2)
        return cls(ticker, rounded, prev, timestamp, seq, ref)


def is_positive_finite(value: float) -> bool:
    """True for a finite number above zero (a usable price)."""
    return math.isfinite(value) and value > 0
