"""The 1 min bar backfill of a producer whose source is Massive's REST poller
(docs/BARS.md "Backfill"), built from the settings and the running source; or none.

Imports the Massive client only when a backfill is built, so the simulator never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from producer.sources.base import MarketDataSource
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.sources.massive_backfill import Backfill, BarWriter

log = logging.getLogger(__name__)


def backfill_for(settings: Settings, source: MarketDataSource | None, write: BarWriter
                 ) -> Backfill | None:
    """The backfill writing through ``write``, when Massive's REST source runs with bars
    on and its calls budget leaves room beside the snapshot polls; else None (one line
    when the budget is what leaves no room)."""
    budget = getattr(source, "budget", None)
    if not settings.use_massive or budget is None or not settings.bars_enabled:
        return None
    from producer.sources.massive_backfill import AggsClient, Backfill

    key, base_url = settings.massive_api_key, settings.massive_base_url
    # The poller's calls come first: the backfill only takes what they leave
    # (the free tier's 5 a minute with 15 s polls leaves it 1 a minute).
    polls = math.ceil(budget.window_s / settings.poll_interval_s)
    if polls >= budget.calls:
        log.warning("no 1 min backfill: the snapshot polls alone make %d calls a minute "
                    "and PRICEFEED_MASSIVE_CALLS_PER_MINUTE is %d; raise it to your "
                    "plan's limit", polls, budget.calls)
        return None
    return Backfill(lambda: AggsClient(key.get(), base_url), budget, write,
                    leave=min(budget.calls - 1, polls))


class PartitionBackfills:
    """On a Cluster: each partition's tickers backfilled once per take (as once per term on
    one server), one batch at a time through the process's one calls budget."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[list[str]] = asyncio.Queue()

    def add(self, tickers: Sequence[str]) -> None:
        """Backfill ``tickers`` after the batches before them."""
        if tickers:
            self._queue.put_nowait(list(tickers))

    async def run(self, backfill: Backfill | None) -> NoReturn:
        """Run ``backfill`` over each batch as it comes (with None, let them go)."""
        while True:
            tickers = await self._queue.get()
            if backfill is not None:
                await backfill.run(tickers)
