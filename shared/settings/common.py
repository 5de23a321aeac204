"""Settings both services read: Redis, the namespace, the tickers, logging; and the
reading machinery every role's settings use (`Reader` and its parsers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from shared.errors import SettingsError
from shared.keys import DEFAULT_NAMESPACE, Keys, Layout
from shared.models import InvalidTicker, normalize_ticker
from shared.redisio.cluster import SCHEMES as CLUSTER_SCHEMES
from shared.redisio.cluster import parse_cluster_url
from shared.redisio.sentinel import SCHEMES as SENTINEL_SCHEMES
from shared.redisio.sentinel import parse_sentinel_url

T = TypeVar("T")
N = TypeVar("N", int, float)

DEFAULT_TICKERS: Final[tuple[str, ...]] = (
    "AAPL", "GOOGL", "MSFT", "AMZN", "TSLA", "NVDA", "META", "JPM", "V", "NFLX",
)
DEFAULT_REDIS_URL: Final[str] = "redis://127.0.0.1:6379/0"
DEFAULT_CLUSTER_PARTITIONS: Final[int] = 16
MAX_PARTITIONS: Final[int] = 1024
LOG_LEVELS: Final[frozenset[str]] = frozenset({"DEBUG", "INFO", "WARNING", "ERROR"})
_TLS_VARIABLES: Final = ("PRICEFEED_REDIS_CA_FILE", "PRICEFEED_REDIS_CERT_FILE",
                         "PRICEFEED_REDIS_KEY_FILE")


class Secret:
    """A string that never shows itself in a repr, a log line or an f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret value itself; use it only where it is sent to its owner."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class CommonSettings:
    """What both services need: where Redis is, under which names, and how to log."""

    redis_url: str = DEFAULT_REDIS_URL
    namespace: str = DEFAULT_NAMESPACE
    tickers: tuple[str, ...] = DEFAULT_TICKERS
    max_watchlist: int = 1_000
    request_timeout_s: float = 10.0
    log_level: str = "INFO"
    redis_ca_file: str | None = None
    redis_cert_file: str | None = None
    redis_key_file: str | None = None
    partitions: int = 0  # 0: one server (or Sentinel); P > 0 on a Cluster

    @property
    def keys(self) -> Keys:
        """The Redis names under this namespace (one server; on a Cluster see `layout`)."""
        return Keys(self.namespace)

    @property
    def layout(self) -> Layout:
        """Where the names live: one server, or `partitions` partitions on a Cluster."""
        return Layout(self.namespace, self.partitions)

    @property
    def clustered(self) -> bool:
        """True when ``REDIS_URL`` names a Cluster (docs/CLUSTER.md)."""
        return self.partitions > 0


class Reader:
    """Reads variables from ``env``; a bad one raises `SettingsError` naming it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        """``parse`` of the variable ``name``, or ``default`` when it is unset or blank."""
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, InvalidTicker) as e:
            hidden = any(word in name for word in ("KEY", "TOKEN", "SECRET"))
            shown = "<hidden>" if hidden else repr(_without_password(raw)[:80])
            raise SettingsError(f"{name}={shown} is invalid: {e}") from e


def _without_password(raw: str) -> str:
    """``raw`` with the password of a ``scheme://user:password@`` part as ``***`` (a URL
    too malformed for `urllib` is still shown without it)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw, count=1)


def read_common(r: Reader) -> dict[str, Any]:
    """The `CommonSettings` fields from the environment."""
    d = CommonSettings()
    return {
        "redis_url": r.get("REDIS_URL", _redis_url, d.redis_url),
        "namespace": r.get("PRICEFEED_NAMESPACE", _namespace, d.namespace),
        "tickers": r.get("PRICEFEED_TICKERS", _tickers, d.tickers),
        "max_watchlist": r.get("PRICEFEED_MAX_WATCHLIST", int_range(1, 100_000), 1_000),
        "request_timeout_s": r.get("PRICEFEED_REQUEST_TIMEOUT", interval(0.1, 300), 10.0),
        "log_level": r.get("PRICEFEED_LOG_LEVEL", choice(LOG_LEVELS, upper=True), "INFO"),
        **_redis_tls(r),
        "partitions": _partitions(r),
    }


def _partitions(r: Reader) -> int:
    """``PRICEFEED_PARTITIONS``: on a Cluster 1 to `MAX_PARTITIONS` (default 16); on one
    server it is 0, and setting it is a mistake worth a line (docs/CLUSTER.md)."""
    clustered = urlsplit(r.env.get("REDIS_URL", "").strip()).scheme in CLUSTER_SCHEMES
    given = r.get("PRICEFEED_PARTITIONS", int_range(1, MAX_PARTITIONS), None)
    if not clustered:
        if given is not None:
            raise SettingsError("PRICEFEED_PARTITIONS applies to a Cluster only "
                                "(REDIS_URL=redis+cluster://h1:7000,h2:7001)")
        return 0
    return DEFAULT_CLUSTER_PARTITIONS if given is None else given


def _redis_tls(r: Reader) -> dict[str, Any]:
    """Files for ``rediss://`` (docs/REDIS.md); a client key needs its certificate."""
    tls = {
        "redis_ca_file": r.get("PRICEFEED_REDIS_CA_FILE", _readable_file, None),
        "redis_cert_file": r.get("PRICEFEED_REDIS_CERT_FILE", _readable_file, None),
        "redis_key_file": r.get("PRICEFEED_REDIS_KEY_FILE", _readable_file, None),
    }
    if (tls["redis_cert_file"] is None) != (tls["redis_key_file"] is None):
        raise SettingsError("PRICEFEED_REDIS_CERT_FILE and PRICEFEED_REDIS_KEY_FILE go "
                            "together: set both for a client certificate, or neither")
    scheme = urlsplit(r.env.get("REDIS_URL", "").strip()).scheme
    given = [name for name, value in zip(_TLS_VARIABLES, tls.values(), strict=True) if value]
    if given and scheme not in ("rediss", "rediss+sentinel", "rediss+cluster"):
        raise SettingsError(f"{given[0]} needs a rediss:// REDIS_URL (TLS), or "
                            "rediss+sentinel:// or rediss+cluster://")
    return tls


def _redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(raw)  # docs/REDIS.md, "Sentinel"
        return raw
    if parts.scheme in CLUSTER_SCHEMES:
        parse_cluster_url(raw)  # docs/CLUSTER.md
        return raw
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected redis://host:port/db, rediss://..., unix://..., "
                         "redis+sentinel://h1:26379,h2:26379/<master>/<db> or "
                         "redis+cluster://h1:7000,h2:7001")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("the URL has no host")
    _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    return raw


def secret(raw: str) -> Secret:
    """A token or key: visible ASCII only (it travels in an HTTP header or query)."""
    if not all("!" <= c <= "~" for c in raw):
        raise ValueError("use visible ASCII characters only (no spaces or control characters)")
    return Secret(raw)


def _readable_file(raw: str) -> str:
    try:
        with open(raw, "rb"):
            return raw
    except OSError as e:
        raise ValueError(f"cannot read the file ({e.strerror})") from e


def _namespace(raw: str) -> str:
    allowed = all(c.isascii() and (c.isalnum() or c in "_-.") for c in raw)
    if not (1 <= len(raw) <= 64) or not allowed:
        raise ValueError("use 1-64 characters from letters, digits, '_', '-' and '.'")
    return raw


def _tickers(raw: str) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for item in (t.strip() for t in raw.split(",")):
        if not item:
            continue
        try:
            out[normalize_ticker(item)] = None
        except InvalidTicker as e:
            raise ValueError(f"{item[:20]!r} is not a ticker ({e})") from None
    if not out:
        raise ValueError("give at least one ticker")
    return tuple(out)


def interval(low: float, high: float) -> Callable[[str], float]:
    """A parser of seconds within ``[low, high]``."""
    return _bounded(float, low, high,
                    f"expected a number of seconds between {low:g} and {high:g}")


def int_range(low: int, high: int) -> Callable[[str], int]:
    """A parser of whole numbers within ``[low, high]``."""
    return _bounded(int, low, high, f"expected a whole number between {low} and {high}")


def _bounded(convert: Callable[[str], N], low: N, high: N,
             expected: str) -> Callable[[str], N]:
    def parse(raw: str) -> N:
        try:
            value = convert(raw)
        except ValueError:
            raise ValueError(expected) from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(expected)
        return value

    return parse


def switch(raw: str) -> bool:
    value = raw.lower()
    if value not in ("on", "off", "true", "false", "1", "0"):
        raise ValueError("expected on or off")
    return value in ("on", "true", "1")


def url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"expected a {' or '.join(schemes)} URL")
        _ = parts.port
        return raw.rstrip("/")

    return parse


def choice(options: frozenset[str], upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(sorted(options))}")
        return value

    return parse
