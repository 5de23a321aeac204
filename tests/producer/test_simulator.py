"""The GBM simulator: the model's statistics (docs/ARCHITECTURE.md), positivity,
reproducibility, add/remove."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from producer.sources.correlation import (
    DENSE_LIMIT,
    CorrelatedNormals,
    correlation_matrix,
    factor_loadings,
)
from producer.sources.gbm import GBMSimulator
from producer.sources.seed import SEED_PRICES, pair_correlation
from shared.settings import DEFAULT_TICKERS


def log_return_correlation(sim: GBMSimulator, steps: int, columns=None) -> np.ndarray:
    """Correlation of the log returns of the (rounded) published prices over ``steps``."""
    prices = np.array([sim.step_array() for _ in range(steps)])
    if columns is not None:
        prices = prices[:, columns]
    return np.corrcoef(np.diff(np.log(prices), axis=0), rowvar=False)


def test_correlation_of_the_default_tickers_matches_the_spec() -> None:
    # Shocks off, and a dt large enough that each move dwarfs the cent rounding.
    sim = GBMSimulator(DEFAULT_TICKERS, dt=1e-3, event_probability=0.0, seed=7)
    measured = log_return_correlation(sim, 20_000)
    for (i, a), (j, b) in itertools.combinations(enumerate(DEFAULT_TICKERS), 2):
        assert measured[i, j] == pytest.approx(pair_correlation(a, b), abs=0.05), (a, b)


def test_correlation_holds_beyond_the_dense_limit() -> None:
    tickers = [*DEFAULT_TICKERS, *(f"X{i}" for i in range(DENSE_LIMIT))]
    sim = GBMSimulator(tickers, dt=1e-3, event_probability=0.0, seed=11)
    sim.step()
    assert not sim._normals.dense  # the factor path is the one under test
    sample = [*range(len(DEFAULT_TICKERS)), 10, 11, 200]
    measured = log_return_correlation(sim, 20_000, sample)
    for (x, i), (y, j) in itertools.combinations(enumerate(sample), 2):
        expected = pair_correlation(tickers[i], tickers[j])
        assert measured[x, y] == pytest.approx(expected, abs=0.05), (tickers[i], tickers[j])


def test_the_factor_form_is_exactly_the_spec_matrix() -> None:
    tickers = [*DEFAULT_TICKERS, "PYPL", "XOM"]
    loadings, idio = factor_loadings(tickers)
    assert np.allclose(loadings @ loadings.T + np.diag(idio**2), correlation_matrix(tickers))


def test_both_draw_paths_have_unit_variance() -> None:
    rng = np.random.default_rng(3)
    for n in (10, DENSE_LIMIT + 1):
        normals = CorrelatedNormals([f"T{i}" for i in range(n)])
        draws = np.array([normals.draw(rng) for _ in range(4000)])
        assert np.allclose(draws.var(axis=0).mean(), 1.0, atol=0.05)


@pytest.mark.parametrize(("dt", "events"), [(None, 0.001), (1e-2, 0.02)])
def test_prices_stay_positive_over_10000_steps(dt: float | None, events: float) -> None:
    kwargs = {} if dt is None else {"dt": dt}
    sim = GBMSimulator([*DEFAULT_TICKERS, "PYPL"], event_probability=events, seed=5, **kwargs)
    lowest = min(min(sim.step().values()) for _ in range(10_000))
    assert lowest > 0


def test_step_rounds_to_cents_and_moves_prices() -> None:
    sim = GBMSimulator(DEFAULT_TICKERS, seed=1)
    first, later = sim.step(), [sim.step() for _ in range(50)][-1]
    assert all(round(p, 2) == p for p in first.values())
    assert first != later
    assert abs(first["AAPL"] / SEED_PRICES["AAPL"] - 1) < 0.01  # a tick is a small move


def test_a_seed_reproduces_a_run() -> None:
    def run(seed: int) -> list[dict[str, float]]:
        sim = GBMSimulator([*DEFAULT_TICKERS, "PYPL"], event_probability=0.05, seed=seed)
        return [sim.step() for _ in range(200)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_add_and_remove_tickers() -> None:
    sim = GBMSimulator(["AAPL", "MSFT"], seed=2)
    sim.step()
    sim.add_ticker("PYPL", 70.0)
    sim.add_ticker("TSLA")
    sim.add_ticker("AAPL", 1.0)  # already there: unchanged
    assert sim.get_tickers() == ["AAPL", "MSFT", "PYPL", "TSLA"]
    assert sim.get_price("PYPL") == 70.0 and sim.get_price("TSLA") == SEED_PRICES["TSLA"]
    assert sim.get_price("AAPL") != 1.0
    assert set(sim.step()) == {"AAPL", "MSFT", "PYPL", "TSLA"}
    sim.remove_ticker("MSFT")
    sim.remove_ticker("NOPE")
    assert set(sim.step()) == {"AAPL", "PYPL", "TSLA"}
    assert sim.get_price("MSFT") is None
    assert sim.get_tickers() == ["AAPL", "PYPL", "TSLA"]


def test_an_unknown_ticker_starts_within_the_spec_range() -> None:
    sim = GBMSimulator([f"Z{i}" for i in range(50)], seed=9)
    assert all(50 <= sim.get_price(t) <= 300 for t in sim.get_tickers())


def test_continues_from_given_prices() -> None:
    sim = GBMSimulator(["AAPL", "NVDA"], initial_prices={"AAPL": 123.45}, seed=1)
    assert sim.get_price("AAPL") == 123.45
    assert sim.get_price("NVDA") == SEED_PRICES["NVDA"]


def test_empty_simulator_steps_to_nothing() -> None:
    sim = GBMSimulator([], seed=1)
    assert sim.step() == {}
    sim.add_ticker("AAPL")
    assert list(sim.step()) == ["AAPL"]


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        GBMSimulator(["AAPL"], dt=0)
    with pytest.raises(ValueError):
        GBMSimulator(["AAPL"], event_probability=1.5)


def test_shock_events_move_a_price_by_two_to_five_percent() -> None:
    # A dt so small that the GBM part is nil, and a shock on every ticker at every step.
    sim = GBMSimulator(DEFAULT_TICKERS, dt=1e-15, event_probability=1.0, seed=4)
    before = np.array(list(sim.step().values()))
    moves = []
    for _ in range(200):
        after = np.array(list(sim.step().values()))
        moves.append(after / before - 1)
        before = after
    size = np.abs(np.array(moves))
    assert size.min() > 0.0195 and size.max() < 0.0505  # cent rounding blurs the edges
    assert (np.array(moves) > 0).mean() == pytest.approx(0.5, abs=0.05)
