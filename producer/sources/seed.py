"""Seed data of the simulator: prices, GBM parameters and correlation groups
(README.md, "Architecture"). The default tickers are a setting (`shared.settings`)."""

from __future__ import annotations

from typing import Final

SEED_PRICES: Final[dict[str, float]] = {
    "AAPL": 190.0, "GOOGL": 175.0, "MSFT": 420.0, "AMZN": 185.0, "TSLA": 250.0,
    "NVDA": 800.0, "META": 500.0, "JPM": 195.0, "V": 280.0, "NFLX": 600.0,
}

# ticker -> (sigma, mu): annualised volatility and drift.
TICKER_PARAMS: Final[dict[str, tuple[float, float]]] = {
    "AAPL": (0.22, 0.05), "GOOGL": (0.25, 0.05), "MSFT": (0.20, 0.05),
    "AMZN": (0.28, 0.05), "TSLA": (0.50, 0.03), "NVDA": (0.40, 0.08),
    "META": (0.30, 0.05), "JPM": (0.18, 0.04), "V": (0.17, 0.04), "NFLX": (0.35, 0.05),
}
DEFAULT_PARAMS: Final[tuple[float, float]] = (0.25, 0.05)
# A ticker with no seed price starts uniformly in this range.
UNKNOWN_PRICE_RANGE: Final[tuple[float, float]] = (50.0, 300.0)

CORRELATION_GROUPS: Final[dict[str, frozenset[str]]] = {
    "tech": frozenset({"AAPL", "GOOGL", "MSFT", "AMZN", "META", "NVDA", "NFLX"}),
    "finance": frozenset({"JPM", "V"}),
}
INTRA_GROUP_CORR: Final[dict[str, float]] = {"tech": 0.6, "finance": 0.5}
TSLA_CORR: Final[float] = 0.3
CROSS_GROUP_CORR: Final[float] = 0.3

EVENT_PROBABILITY: Final[float] = 0.001
EVENT_SIZE_RANGE: Final[tuple[float, float]] = (0.02, 0.05)
TRADING_SECONDS_PER_YEAR: Final[float] = 252 * 6.5 * 3600


def pair_correlation(a: str, b: str) -> float:
    """Correlation of the normal draws of tickers ``a`` and ``b`` (1.0 on the diagonal)."""
    if a == b:
        return 1.0
    if "TSLA" in (a, b):
        return TSLA_CORR
    for group, members in CORRELATION_GROUPS.items():
        if a in members and b in members:
            return INTRA_GROUP_CORR[group]
    return CROSS_GROUP_CORR


def dt_for_interval(tick_interval_s: float) -> float:
    """A tick of ``tick_interval_s`` seconds as a fraction of a trading year."""
    return tick_interval_s / TRADING_SECONDS_PER_YEAR
