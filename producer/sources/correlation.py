"""The correlation structure of the simulator's normal draws (docs/ARCHITECTURE.md, "The
simulator's model").

That correlation matrix is exactly a factor model: every ticker loads ``sqrt(0.3)`` on
a market factor, tech members load ``sqrt(0.3)`` more on a tech factor (0.3 + 0.3 = 0.6
within tech) and finance members ``sqrt(0.2)`` on a finance factor (0.3 + 0.2 = 0.5); each
keeps an idiosyncratic part so its variance is 1. So ``C = B·Bᵀ + D`` with B of width 3.

Up to `DENSE_LIMIT` tickers we draw through the Cholesky factor of the dense matrix, as the
model defines it; beyond, through the factor form, which has the same distribution: at 10,000
tickers (the benchmark, docs/PERFORMANCE.md) a dense Cholesky is an 800 MB matrix, O(n³) to rebuild
and O(n²) per draw, while the factor form is O(n) in memory and per draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from producer.sources.seed import (
    CORRELATION_GROUPS,
    CROSS_GROUP_CORR,
    INTRA_GROUP_CORR,
    pair_correlation,
)

DENSE_LIMIT: Final[int] = 256
# Factor 0 is the market; one factor per correlation group after it.
_GROUPS: Final[tuple[str, ...]] = tuple(sorted(CORRELATION_GROUPS))


def correlation_matrix(tickers: Sequence[str]) -> np.ndarray:
    """The pairwise correlation matrix for ``tickers`` (dense; for tests and Cholesky)."""
    n = len(tickers)
    out = np.empty((n, n))
    for i, a in enumerate(tickers):
        for j in range(i, n):
            out[i, j] = out[j, i] = pair_correlation(a, tickers[j])
    return out


def factor_loadings(tickers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(B, d)``: loadings (n × factors) and idiosyncratic scales, so ``C = B·Bᵀ + diag(d²)``."""
    loadings = np.zeros((len(tickers), 1 + len(_GROUPS)))
    loadings[:, 0] = np.sqrt(CROSS_GROUP_CORR)
    for k, group in enumerate(_GROUPS, start=1):
        members = CORRELATION_GROUPS[group]
        extra = np.sqrt(INTRA_GROUP_CORR[group] - CROSS_GROUP_CORR)
        for i, ticker in enumerate(tickers):
            if ticker in members:
                loadings[i, k] = extra
    idio = np.sqrt(1.0 - np.sum(loadings**2, axis=1))
    return loadings, idio


class CorrelatedNormals:
    """Draws of standard normals with the model's correlation for a fixed ticker list."""

    def __init__(self, tickers: Sequence[str]) -> None:
        self.size = len(tickers)
        self.dense = self.size <= DENSE_LIMIT
        if self.dense:
            self._cholesky = np.linalg.cholesky(correlation_matrix(tickers))
        else:
            self._loadings, self._idio = factor_loadings(tickers)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One vector of ``size`` correlated standard normals."""
        if self.size == 0:
            return np.empty(0)
        if self.dense:
            return self._cholesky @ rng.standard_normal(self.size)
        common = self._loadings @ rng.standard_normal(self._loadings.shape[1])
        return common + self._idio * rng.standard_normal(self.size)
