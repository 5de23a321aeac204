"""Choose the price source from the settings: Massive when a key is set, else the simulator."""

from __future__ import annotations

from producer.sources.base import MarketDataSource, QuoteSink
from producer.sources.simulator import SimulatorSource
from shared.settings import Settings


def create_source(settings: Settings, sink: QuoteSink) -> MarketDataSource:
    """The simulator, unless ``MASSIVE_API_KEY`` is set (then the Massive source)."""
    if settings.use_massive:
        # Imported here so the simulator never loads the Massive client.
        from producer.sources.massive_rest import create_massive_source

        return create_massive_source(settings, sink)
    return SimulatorSource(sink, settings.tick_interval_s, settings.seed)
