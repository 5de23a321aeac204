"""The simulator behind the `MarketDataSource` interface: one `GBMSimulator` step per tick."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from producer.sources.base import MarketDataSource, PriceBatch, QuoteSink
from producer.sources.gbm import GBMSimulator
from producer.sources.seed import dt_for_interval
from shared.tasks import stop_tasks

log = logging.getLogger(__name__)


class SimulatorSource(MarketDataSource):
    """Steps the simulator every ``tick_interval_s`` and hands each batch to ``sink``.

    Ticks are scheduled on the monotonic clock (tick k at start + k·interval), so they do not
    drift; a tick that overruns skips the missed slots instead of bursting to catch up.
    """

    def __init__(
        self, sink: QuoteSink, tick_interval_s: float = 0.5, seed: int | None = None
    ) -> None:
        self._sink = sink
        self.tick_interval_s = tick_interval_s
        self._seed = seed
        self._sim: GBMSimulator | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def kind(self) -> str:
        return "simulator"

    def details(self) -> dict[str, object]:
        return {"feed": "simulated", "reference": "first price of the UTC day"}

    async def start(self, tickers: Sequence[str], last_prices: Mapping[str, float]) -> None:
        await self.stop()
        self._sim = GBMSimulator(
            tickers, dt=dt_for_interval(self.tick_interval_s), seed=self._seed,
            initial_prices=last_prices,
        )
        self._task = asyncio.create_task(self._run(), name="simulator-ticks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])

    async def add_ticker(self, ticker: str, last_price: float | None = None) -> None:
        if self._sim is not None:
            self._sim.add_ticker(ticker, last_price)

    async def remove_ticker(self, ticker: str) -> None:
        if self._sim is not None:
            self._sim.remove_ticker(ticker)

    def get_tickers(self) -> list[str]:
        return [] if self._sim is None else self._sim.get_tickers()

    async def continue_from(self, last_prices: Mapping[str, float]) -> None:
        if self._sim is not None:
            self._sim.set_prices(last_prices)

    def batch(self) -> PriceBatch:
        """Advance one tick: every ticker's price, stamped now."""
        assert self._sim is not None, "start() first"
        prices = self._sim.step_array()
        return PriceBatch(self._sim.get_tickers(), prices, time.time())

    async def _run(self) -> None:
        interval = self.tick_interval_s
        next_at = time.monotonic()
        while True:
            try:
                batch = self.batch()
                if batch:
                    await self._sink(batch)
            except Exception:  # one bad tick must not end the source; the next one retries
                log.exception("simulator tick failed")
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                skipped = int(-delay // interval) + 1
                next_at += skipped * interval
                delay = next_at - time.monotonic()
            await asyncio.sleep(delay)
