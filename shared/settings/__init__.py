"""Settings: read once from the environment into one frozen object, validated at start.

This is the only package that reads ``os.environ``. A bad value raises `SettingsError`
whose message is one line naming the variable; `load_or_exit` turns it into that line on
stderr and exit status 2. The fields are grouped by role — `common` (both services),
`producer`, `gateway` — and `Settings` holds them all, so one object is read once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import SettingsError
from shared.settings.common import (
    DEFAULT_REDIS_URL,
    DEFAULT_TICKERS,
    LOG_LEVELS,
    CommonSettings,
    Reader,
    Secret,
    read_common,
)
from shared.settings.gateway import (
    LOOPBACK_HOSTS,
    MIN_SECRET_BYTES,
    READ_AUTH_MODES,
    GatewaySettings,
    is_loopback,
    read_gateway,
)
from shared.settings.producer import (
    DEFAULT_HISTORY_LEN,
    DEFAULT_HISTORY_S,
    MASSIVE_MODES,
    ProducerSettings,
    read_producer,
)

__all__ = [
    "DEFAULT_HISTORY_LEN", "DEFAULT_HISTORY_S", "DEFAULT_REDIS_URL", "DEFAULT_TICKERS",
    "LOG_LEVELS", "LOOPBACK_HOSTS", "MASSIVE_MODES", "MIN_SECRET_BYTES", "READ_AUTH_MODES",
    "CommonSettings", "GatewaySettings", "ProducerSettings", "Secret", "Settings",
    "is_loopback", "is_set", "load_or_exit",
]


@dataclass(frozen=True)
class Settings(CommonSettings, ProducerSettings, GatewaySettings):
    """Everything configurable, with the defaults README.md "Configuration" gives."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; raise `SettingsError` naming the first bad one."""
        reader = Reader(os.environ if environ is None else environ)
        return cls(**read_common(reader), **read_producer(reader), **read_gateway(reader))


def load_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """`Settings.from_env`, or one line on stderr naming the variable and exit status 2."""
    try:
        return Settings.from_env(environ)
    except SettingsError as e:
        print(f"pricefeed: configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when the variable ``name`` holds a non-blank value.

    `pricefeed up` needs this to tell "REDIS_URL given" from "the default URL"
    (README.md, "Quick start": use the given Redis, else start one).
    """
    env = os.environ if environ is None else environ
    return bool(env.get(name, "").strip())
