"""Choose the price source from the settings: Massive when a key is set, else the simulator.

The settings have validated every value already (`shared.settings`); this only chooses.
"""

from __future__ import annotations

from producer.sources.base import MarketDataSource, QuoteSink
from producer.sources.simulator import SimulatorSource
from shared.settings import Settings


def create_source(settings: Settings, sink: QuoteSink) -> MarketDataSource:
    """The simulator, unless ``MASSIVE_API_KEY`` is set: then Massive by REST snapshots,
    or by websocket with ``PRICEFEED_MASSIVE_MODE=websocket``."""
    if not settings.use_massive:
        return SimulatorSource(sink, settings.tick_interval_s, settings.seed)
    # Imported here so the simulator never loads the Massive SDK.
    from producer.sources.massive_api import adopt_sdk_loggers

    adopt_sdk_loggers()
    if settings.massive_mode == "websocket":
        from producer.sources.massive_ws import create_ws_source

        return create_ws_source(settings, sink)
    from producer.sources.massive_rest import create_rest_source

    return create_rest_source(settings, sink)
