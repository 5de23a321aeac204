"""Folding updates into bars: OHLC invariants, equality with a plain recomputation, the
late-update and sweep rules (docs/BARS.md "Folding")."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.bars import BarBook, Bars
from shared.bars import INTERVALS, Bar, decode_bar, encode_bar


def recompute(updates: list[tuple[str, float, float, float | None]], width: int) -> dict:
    """(ticker, start) -> Bar, folded the obvious way from (ticker, price, ts, size)."""
    out: dict[tuple[str, int], Bar] = {}
    for ticker, price, ts, size in updates:
        key = (ticker, int(ts // width) * width)
        bar = out.get(key)
        if bar is None:
            out[key] = Bar(key[1], price, price, price, price, 1, size)
        else:
            v = bar.v if size is None else (size if bar.v is None else bar.v + size)
            out[key] = Bar(bar.t, bar.o, max(bar.h, price), min(bar.lo, price), price,
                           bar.n + 1, v)
    return out


def run_ticks(ticks, forming_interval_s: float = 0.0):
    """Fold ``ticks`` [(tickers, prices, stamps, sizes)]; closed bars per interval and the book."""
    book = BarBook(forming_interval_s)
    closed: dict[str, list[tuple[str, Bar]]] = defaultdict(list)
    for tickers, prices, stamps, sizes in ticks:
        vols = None if sizes is None else np.array(sizes, dtype=float)
        folded = book.fold(tickers, np.array(prices), np.array(stamps, dtype=float), vols)
        for interval, (bars, _ended) in folded.items():
            closed[interval] += zip(bars.tickers, bars.to_list(), strict=True)
    return closed, book


def random_ticks(rng: random.Random, n_ticks: int, tickers: list[str], sizes: bool):
    ts = 1_764_064_790.0 + rng.random()
    ticks = []
    for _ in range(n_ticks):
        ts += rng.choice([0.05, 0.3, 0.5, 0.9, 2.5, 61.0])
        chosen = [t for t in tickers if rng.random() < 0.8] or tickers[:1]
        prices = [round(rng.uniform(10, 20), 2) for _ in chosen]
        stamps = [ts] * len(chosen)
        ticks.append((chosen, prices, stamps, [rng.randint(1, 500) for _ in chosen]
                      if sizes else None))
    return ticks


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), sizes=st.booleans())
def test_closed_and_forming_bars_equal_a_plain_recomputation(seed: int, sizes: bool) -> None:
    rng = random.Random(seed)
    tickers = ["AAPL", "MSFT", "NVDA", "TSLA"]
    ticks = random_ticks(rng, 120, tickers, sizes)
    closed, book = run_ticks(ticks)
    updates = [(t, p, s, None if z is None else float(z))
               for tk, pr, st_, sz in ticks
               for t, p, s, z in zip(tk, pr, st_, sz or [None] * len(tk), strict=True)]
    for interval, width in INTERVALS.items():
        expected = recompute(updates, width)
        got = {(t, b.t): b for t, b in closed[interval]}
        assert len(got) == len(closed[interval]), "a bar closed twice"
        for ticker in tickers:
            forming = book.series[interval].current(ticker)
            if forming is not None:
                got[(ticker, forming.t)] = forming
        assert got == expected
        for bar in got.values():  # the OHLC invariants
            assert bar.lo <= min(bar.o, bar.c) <= max(bar.o, bar.c) <= bar.h
            assert bar.n > 0
            assert bar.t % width == 0
            assert (bar.v is None) == (not sizes)


def test_a_bar_closes_when_a_later_interval_starts_and_only_then() -> None:
    ticks = [(["A"], [10.0], [100.2], None), (["A"], [12.0], [100.7], None),
             (["A"], [9.0], [100.9], None), (["A"], [11.0], [101.1], None)]
    closed, book = run_ticks(ticks)
    assert [b for _, b in closed["1s"]] == [Bar(100, 10.0, 12.0, 9.0, 9.0, 3, None)]
    assert book.series["1s"].current("A") == Bar(101, 11.0, 11.0, 11.0, 11.0, 1, None)
    assert closed["1m"] == []
    assert book.series["1m"].current("A") == Bar(60, 10.0, 12.0, 9.0, 11.0, 4, None)


def test_a_quiet_ticker_s_bar_closes_when_the_source_clock_passes_its_end() -> None:
    book = BarBook(0.0)
    book.fold(["A", "B"], np.array([10.0, 20.0]), np.array([100.5, 100.5]), None)
    folded = book.fold(["A"], np.array([11.0]), np.array([101.5]), None)
    bars, ended = folded["1s"]
    assert sorted(bars.tickers) == ["A", "B"]
    assert ended == ["B"]  # B has no forming bar until it trades again
    assert book.series["1s"].current("B") is None


def test_a_late_update_never_reopens_a_closed_bar() -> None:
    ticks = [(["A"], [10.0], [100.5], None), (["A"], [11.0], [101.5], None),
             (["A"], [12.0], [100.8], None),   # late: belongs to 100, which closed
             (["A"], [13.0], [101.9], None)]
    closed, book = run_ticks(ticks)
    starts = [b.t for _, b in closed["1s"]]
    assert starts == [100]
    assert book.series["1s"].current("A") == Bar(101, 11.0, 13.0, 11.0, 13.0, 3, None)


def test_encoded_bars_are_the_codec_s_json_byte_for_byte() -> None:
    bars = Bars(["A", "B"], np.array([60, 120]), np.array([1.5, 2.25]), np.array([2.0, 3.0]),
                np.array([1.0, 2.0]), np.array([1.75, 2.5]), np.array([3, 1]),
                np.array([np.nan, 150.0]))
    encoded = bars.encode()
    assert encoded == [encode_bar(b) for b in bars.to_list()]
    assert [decode_bar(raw) for raw in encoded] == bars.to_list()
    assert b'"v":null' in encoded[0]


def test_many_encoded_bars_match_the_codec_with_and_without_volumes() -> None:
    rng = np.random.default_rng(4)
    n = 20_000
    low = np.round(rng.uniform(0.01, 5000, n), 2)
    cols = (np.arange(n) * 60 + 1_764_000_000, low + 0.5, low + 1.25, low, low + 0.75,
            rng.integers(1, 10_000, n))
    no_sizes = Bars([f"T{i}" for i in range(n)], *cols, np.full(n, np.nan))
    sizes = np.where(rng.random(n) < 0.5, np.nan, np.round(rng.uniform(0, 1e6, n), 1))
    some_sizes = Bars(no_sizes.tickers, *cols, sizes)
    for bars in (no_sizes, some_sizes):
        assert bars.encode() == [encode_bar(b) for b in bars.to_list()]


def test_the_forming_bars_are_written_with_a_close_or_once_per_interval() -> None:
    book = BarBook(0.25)
    assert book.forming_due(10.0, closed_any=False)
    assert not book.forming_due(10.1, closed_any=False)
    assert book.forming_due(10.12, closed_any=True)
    assert book.forming_due(10.4, closed_any=False)


def test_ten_thousand_tickers_each_fold_into_their_own_bar() -> None:
    tickers = [f"T{i}" for i in range(10_000)]
    book = BarBook(0.25)
    prices = np.full(len(tickers), 10.0)
    for k in range(5):
        book.fold(tickers, prices + k, np.full(len(tickers), 1000.0 + k * 0.2), None)
    bar = book.series["1s"].current("T9999")
    assert bar == Bar(1000, 10.0, 14.0, 10.0, 14.0, 5, None)
