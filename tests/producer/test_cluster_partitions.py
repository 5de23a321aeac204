"""The pure parts of sharing partitions (docs/CLUSTER.md "Producers scale out"): the
share, what is given up, and the split of a batch by partition."""

from __future__ import annotations

import numpy as np

from producer.partitions import Splitter, beyond_share, share_of
from producer.sources.base import PriceBatch, Quote
from shared.keys import partition_of


def test_the_share_is_the_ceiling_of_partitions_over_live_producers():
    assert [share_of(16, n) for n in (0, 1, 2, 3, 5, 16, 40)] == [16, 16, 8, 6, 4, 1, 1]
    assert share_of(6, 2) * 2 == 6 and share_of(6, 4) == 2


def test_the_partitions_beyond_the_share_are_given_up_highest_first():
    assert beyond_share([0, 5, 2, 4, 1, 3], 3) == [5, 4, 3]
    assert beyond_share([1, 2], 3) == []


def test_a_batch_is_split_by_the_documented_partition_of_each_ticker():
    tickers = ["AAPL", "MSFT", "TSLA", "NVDA", "JPM", "QAA"]
    splitter = Splitter(4)
    batch = PriceBatch(tickers, np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 100.0)
    parts = splitter.split(batch)
    assert sorted(t for part in parts.values() for t in part) == sorted(tickers)
    for index, part in parts.items():
        assert isinstance(part, PriceBatch) and part.timestamp == 100.0
        for ticker in part:
            assert partition_of(ticker, 4) == index
            assert part[ticker].price == float(tickers.index(ticker) + 1)
    # The same tickers next tick: the same per-partition lists (the publisher's fast path).
    again = splitter.split(PriceBatch(list(tickers), np.arange(6.0), 101.0))
    assert all(again[i].tickers is parts[i].tickers for i in parts)  # type: ignore[attr-defined]
    quotes = {"AAPL": Quote(1.0, 5.0), "QAA": Quote(2.0, 5.0, size=3.0)}
    mapped = splitter.split(quotes)
    assert mapped[partition_of("QAA", 4)]["QAA"] == Quote(2.0, 5.0, size=3.0)
