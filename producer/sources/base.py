"""The price source interface: the simulator and Massive both implement it.

A source produces *quotes* (a price and the time it was observed) and hands each batch to
the sink it was built with; the publisher turns quotes into PriceUpdates (previous price,
seq) and writes them into Redis. A source knows nothing about Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Quote:
    """A price observed at a time (float Unix seconds), with the traded size when the
    source knows it (Massive's trades; summed into the bars' volume), and the source's own
    reference price for the day's change (Massive's previous close) when it has one."""

    price: float
    timestamp: float
    size: float | None = None
    reference: float | None = None


QuoteSink = Callable[[Mapping[str, Quote]], Awaitable[None]]
"""Receives one batch ``{TICKER: Quote}``; a source awaits it before its next batch."""


class PriceBatch(Mapping[str, Quote]):
    """A batch held as columns: tickers, their prices, one timestamp.

    It is a ``Mapping[str, Quote]`` like any batch, so every sink accepts it; the publisher
    reads the columns directly, because building 10,000 `Quote` objects per tick costs
    ~4 ms (measured), a tenth of the whole tick at the issue's 300,000 updates/s.
    """

    __slots__ = ("_index", "prices", "tickers", "timestamp")

    def __init__(self, tickers: Sequence[str], prices: np.ndarray, timestamp: float) -> None:
        if len(tickers) != len(prices):
            raise ValueError("one price per ticker")
        self.tickers = tickers
        self.prices = prices
        self.timestamp = timestamp
        self._index: dict[str, int] | None = None

    def __getitem__(self, ticker: str) -> Quote:
        if self._index is None:
            self._index = {t: i for i, t in enumerate(self.tickers)}
        return Quote(float(self.prices[self._index[ticker]]), self.timestamp)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tickers)

    def __len__(self) -> int:
        return len(self.tickers)


class MarketDataSource(ABC):
    """A running source of prices for a changing set of tickers."""

    @abstractmethod
    async def start(self, tickers: Sequence[str], last_prices: Mapping[str, float]) -> None:
        """Begin producing for ``tickers``; ``last_prices`` are cached prices to continue from."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop producing and release everything; safe to call twice."""

    @abstractmethod
    async def add_ticker(self, ticker: str, last_price: float | None = None) -> None:
        """Produce ``ticker`` too (continuing from ``last_price`` where a source can)."""

    @abstractmethod
    async def remove_ticker(self, ticker: str) -> None:
        """Stop producing ``ticker``; no batch after this call contains it."""

    @abstractmethod
    def get_tickers(self) -> list[str]:
        """The tickers currently produced."""

    async def continue_from(self, last_prices: Mapping[str, float]) -> None:
        """Go on from ``last_prices`` for those tickers already produced: another producer
        published them until now (a Cluster partition taken over, docs/CLUSTER.md). A
        source with real prices has nothing to continue, hence the default."""
        return None

    @property
    def kind(self) -> str:
        """Short name of the source for status and logs, e.g. ``simulator``."""
        return type(self).__name__

    @property
    def state(self) -> str:
        """Health of the source: ``ok``, or a short reason such as ``auth_rejected``."""
        return "ok"

    def details(self) -> dict[str, object]:
        """What the status shows besides kind and state (``shared.status`` names the keys)."""
        return {}


class MassiveSource(MarketDataSource):
    """What the two Massive sources share: the watchlist, the state and the status details,
    and the background tasks that run between `start` and `stop`.

    A subclass says which tasks to run (`_run`) and what else to let go at stop
    (`_release`); it sets `_state`, `_detail`, `_last_trade` and `feed` as the feed goes.
    Nothing here loads the Massive SDK, so the simulator's imports stay free of it.
    """

    reference = ""  # what the day's change is measured from, as the status says it

    def __init__(self, sink: QuoteSink) -> None:
        self._sink = sink
        self._tickers: dict[str, None] = {}  # an ordered set
        self._state = "starting"
        self._detail: str | None = None
        self._last_trade: float | None = None
        self.feed: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def state(self) -> str:
        return self._state

    def details(self) -> dict[str, object]:
        return {"feed": self.feed, "reference": self.reference, "detail": self._detail,
                "last_trade": self._last_trade}

    def get_tickers(self) -> list[str]:
        return list(self._tickers)

    async def start(self, tickers: Sequence[str], last_prices: Mapping[str, float]) -> None:
        """Start; ``last_prices`` are not needed, Massive has the real prices."""
        if self._tasks:
            raise RuntimeError(f"the {self.kind} source is already started")
        self._tickers = dict.fromkeys(tickers)
        self._tasks = self._run()

    async def stop(self) -> None:
        # Cancelled once and awaited: the websocket's stream closes its connection in a
        # `finally`, which a repeated cancel (`shared.tasks.stop_tasks`) would cut short.
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._release()
        self._state = "stopped"

    @abstractmethod
    def _run(self) -> list[asyncio.Task[None]]:
        """Start the source's background tasks."""

    def _release(self) -> None:
        """Let go of what the tasks used, once they have ended."""
