"""Settings of the producer: the price source, the tick log and the bars."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from shared.settings.common import Reader, Secret, choice, int_range, interval, secret, switch, url

MASSIVE_MODES: Final[frozenset[str]] = frozenset({"rest", "websocket"})
# The tick log's caps (README "The tick log"): 3,600 ticks are 30 minutes at the default
# 2 ticks/s, the age cap 30 minutes; 0 entries turns the log off.
DEFAULT_HISTORY_LEN: Final[int] = 3_600
DEFAULT_HISTORY_S: Final[float] = 1_800.0


@dataclass(frozen=True)
class ProducerSettings:
    """What the producer needs besides `CommonSettings`."""

    tick_interval_s: float = 0.5
    poll_interval_s: float = 15.0
    seed: int | None = None
    massive_api_key: Secret = field(default_factory=lambda: Secret(""))
    massive_base_url: str | None = None
    massive_mode: str = "rest"
    massive_ws_url: str | None = None
    history_len: int = DEFAULT_HISTORY_LEN
    history_s: float = DEFAULT_HISTORY_S
    bars_enabled: bool = True
    bars_1s_retention_s: int = 3600
    bars_1m_retention_s: int = 86_400
    bars_forming_interval_s: float = 1.0
    massive_calls_per_minute: int = 5

    @property
    def use_massive(self) -> bool:
        """Real data from Massive when the key is non-blank; the simulator otherwise."""
        return bool(self.massive_api_key.get().strip())


def read_producer(r: Reader) -> dict[str, Any]:
    """The `ProducerSettings` fields from the environment."""
    return {
        "tick_interval_s": r.get("PRICEFEED_TICK_INTERVAL", interval(0.01, 60), 0.5),
        "poll_interval_s": r.get("PRICEFEED_POLL_INTERVAL", interval(1, 3600), 15.0),
        "seed": r.get("PRICEFEED_SEED", int_range(0, 2**63 - 1), None),
        "massive_api_key": r.get("MASSIVE_API_KEY", secret, Secret("")),
        "massive_base_url": r.get("PRICEFEED_MASSIVE_BASE_URL", url(("http", "https")), None),
        "massive_mode": r.get("PRICEFEED_MASSIVE_MODE", choice(MASSIVE_MODES), "rest"),
        "massive_ws_url": r.get("PRICEFEED_MASSIVE_WS_URL", url(("ws", "wss")), None),
        "history_len": r.get("PRICEFEED_HISTORY_LEN", int_range(0, 10_000_000),
                             DEFAULT_HISTORY_LEN),
        "history_s": r.get("PRICEFEED_HISTORY_SECONDS", interval(1, 7 * 86_400),
                           DEFAULT_HISTORY_S),
        "bars_enabled": r.get("PRICEFEED_BARS", switch, True),
        "bars_1s_retention_s": r.get("PRICEFEED_BARS_1S_RETENTION", int_range(60, 86_400), 3600),
        "bars_1m_retention_s": r.get("PRICEFEED_BARS_1M_RETENTION",
                                     int_range(3600, 30 * 86_400), 86_400),
        "bars_forming_interval_s": r.get("PRICEFEED_BARS_FORMING_INTERVAL", interval(0, 10), 1.0),
        "massive_calls_per_minute": r.get("PRICEFEED_MASSIVE_CALLS_PER_MINUTE",
                                          int_range(1, 10_000), 5),
    }
