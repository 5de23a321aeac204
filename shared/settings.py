"""Settings: read once from the environment into one frozen object, validated at start.

This is the only module that reads ``os.environ``. A bad value raises `SettingsError`
whose message is one line naming the variable; `load_or_exit` turns it into that line on
stderr and exit status 2.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from shared.errors import SettingsError
from shared.keys import DEFAULT_NAMESPACE, Keys
from shared.models import InvalidTicker, normalize_ticker

T = TypeVar("T")

DEFAULT_TICKERS: Final[tuple[str, ...]] = (
    "AAPL", "GOOGL", "MSFT", "AMZN", "TSLA", "NVDA", "META", "JPM", "V", "NFLX",
)
DEFAULT_REDIS_URL: Final[str] = "redis://127.0.0.1:6379/0"
MASSIVE_MODES: Final[frozenset[str]] = frozenset({"rest", "websocket"})
LOG_LEVELS: Final[frozenset[str]] = frozenset({"DEBUG", "INFO", "WARNING", "ERROR"})
READ_AUTH_MODES: Final[frozenset[str]] = frozenset({"none", "jwt"})
_TLS_VARIABLES: Final = ("PRICEFEED_REDIS_CA_FILE", "PRICEFEED_REDIS_CERT_FILE",
                         "PRICEFEED_REDIS_KEY_FILE")
# The Host names a gateway bound to a loopback address accepts unless told otherwise.
LOOPBACK_HOSTS: Final[tuple[str, ...]] = ("localhost", "127.0.0.1", "::1")
# The tick log's caps (README "The tick log"): 3,600 ticks are 30 minutes at the default
# 2 ticks/s, the age cap 30 minutes; 0 entries turns the log off.
DEFAULT_HISTORY_LEN: Final[int] = 3_600
DEFAULT_HISTORY_S: Final[float] = 1_800.0


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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, with the spec's defaults."""

    redis_url: str = DEFAULT_REDIS_URL
    namespace: str = DEFAULT_NAMESPACE
    tickers: tuple[str, ...] = DEFAULT_TICKERS
    tick_interval_s: float = 0.5
    poll_interval_s: float = 15.0
    seed: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_clients: int = 20_000
    max_stream_tickers: int = 100
    max_watchlist: int = 1_000
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    request_timeout_s: float = 10.0
    api_token: Secret = field(default_factory=lambda: Secret(""))
    massive_api_key: Secret = field(default_factory=lambda: Secret(""))
    massive_base_url: str | None = None
    massive_mode: str = "rest"
    massive_ws_url: str | None = None
    ping_interval_s: float = 15.0
    send_timeout_s: float = 5.0
    log_level: str = "INFO"
    read_auth: str = "none"
    jwt_secret: Secret = field(default_factory=lambda: Secret(""))
    jwt_public_key: str = ""  # PEM text (read from the file when a path was given)
    jwt_algorithm: str = ""  # HS256 with a secret, RS256/ES256 from the public key's type
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    max_hz: float | None = None
    redis_ca_file: str | None = None
    redis_cert_file: str | None = None
    redis_key_file: str | None = None
    history_len: int = DEFAULT_HISTORY_LEN
    history_s: float = DEFAULT_HISTORY_S
    bars_enabled: bool = True
    bars_1s_retention_s: int = 3600
    bars_1m_retention_s: int = 86_400
    bars_forming_interval_s: float = 1.0
    massive_calls_per_minute: int = 5

    @property
    def keys(self) -> Keys:
        """The Redis names under this namespace."""
        return Keys(self.namespace)

    @property
    def use_massive(self) -> bool:
        """Real data from Massive when the key is non-blank; the simulator otherwise."""
        return bool(self.massive_api_key.get().strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; raise `SettingsError` naming the first bad one."""
        env = os.environ if environ is None else environ
        return _Reader(env).settings()


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, InvalidTicker) as e:
            hidden = any(word in name for word in ("KEY", "TOKEN", "SECRET"))
            shown = "<hidden>" if hidden else repr(raw[:80])
            raise SettingsError(f"{name}={shown} is invalid: {e}") from e

    def settings(self) -> Settings:
        d = Settings()
        host = self.get("PRICEFEED_HOST", _host, d.host)
        return Settings(
            redis_url=self.get("REDIS_URL", _redis_url, d.redis_url),
            namespace=self.get("PRICEFEED_NAMESPACE", _namespace, d.namespace),
            tickers=self.get("PRICEFEED_TICKERS", _tickers, d.tickers),
            tick_interval_s=self.get("PRICEFEED_TICK_INTERVAL", _interval(0.01, 60), 0.5),
            poll_interval_s=self.get("PRICEFEED_POLL_INTERVAL", _interval(1, 3600), 15.0),
            seed=self.get("PRICEFEED_SEED", _int_range(0, 2**63 - 1), None),
            host=host,
            port=self.get("PRICEFEED_PORT", _int_range(1, 65535), d.port),
            max_clients=self.get("PRICEFEED_MAX_CLIENTS", _int_range(1, 1_000_000), 20_000),
            max_stream_tickers=self.get("PRICEFEED_MAX_STREAM_TICKERS", _int_range(1, 10_000), 100),
            max_watchlist=self.get("PRICEFEED_MAX_WATCHLIST", _int_range(1, 100_000), 1_000),
            cors_origins=self.get("PRICEFEED_CORS_ORIGINS", _origins, ()),
            allowed_hosts=self.get("PRICEFEED_ALLOWED_HOSTS", _hosts, _default_hosts(host)),
            request_timeout_s=self.get("PRICEFEED_REQUEST_TIMEOUT", _interval(0.1, 300), 10.0),
            api_token=self.get("PRICEFEED_API_TOKEN", _secret, Secret("")),
            massive_api_key=self.get("MASSIVE_API_KEY", _secret, Secret("")),
            massive_base_url=self.get("PRICEFEED_MASSIVE_BASE_URL", _http_url, None),
            massive_mode=self.get("PRICEFEED_MASSIVE_MODE", _choice(MASSIVE_MODES), "rest"),
            massive_ws_url=self.get("PRICEFEED_MASSIVE_WS_URL", _ws_url, None),
            ping_interval_s=self.get("PRICEFEED_PING_INTERVAL", _interval(0.05, 300), 15.0),
            send_timeout_s=self.get("PRICEFEED_SEND_TIMEOUT", _interval(0.1, 120), 5.0),
            log_level=self.get("PRICEFEED_LOG_LEVEL", _choice(LOG_LEVELS, upper=True), "INFO"),
            max_hz=self.get("PRICEFEED_MAX_HZ", _interval(0.1, 1000), None),
            **self.access(),
            **self.redis_tls(),
            history_len=self.get("PRICEFEED_HISTORY_LEN", _int_range(0, 10_000_000),
                                 DEFAULT_HISTORY_LEN),
            history_s=self.get("PRICEFEED_HISTORY_SECONDS", _interval(1, 7 * 86_400),
                               DEFAULT_HISTORY_S),
            bars_enabled=self.get("PRICEFEED_BARS", _switch, True),
            bars_1s_retention_s=self.get("PRICEFEED_BARS_1S_RETENTION", _int_range(60, 86_400),
                                         3600),
            bars_1m_retention_s=self.get("PRICEFEED_BARS_1M_RETENTION",
                                         _int_range(3600, 30 * 86_400), 86_400),
            bars_forming_interval_s=self.get("PRICEFEED_BARS_FORMING_INTERVAL",
                                             _interval(0, 10), 1.0),
            massive_calls_per_minute=self.get("PRICEFEED_MASSIVE_CALLS_PER_MINUTE",
                                              _int_range(1, 10_000), 5),
        )

    def access(self) -> dict[str, Any]:
        """Read access (docs/ACCESS.md): the mode and, for ``jwt``, exactly one key."""
        mode = self.get("PRICEFEED_READ_AUTH", _choice(READ_AUTH_MODES), "none")
        if all(self.env.get(n, "").strip() for n in ("PRICEFEED_JWT_SECRET",
                                                     "PRICEFEED_JWT_PUBLIC_KEY")):
            raise SettingsError("PRICEFEED_JWT_SECRET and PRICEFEED_JWT_PUBLIC_KEY are both "
                                "set: give one (HS256 secret, or RS256/ES256 public key)")
        secret = self.get("PRICEFEED_JWT_SECRET", _jwt_secret, Secret(""))
        public_key = self.get("PRICEFEED_JWT_PUBLIC_KEY", _pem_text, "")
        algorithm = ""
        if public_key:
            algorithm = self.get("PRICEFEED_JWT_PUBLIC_KEY", _key_algorithm, "")
        elif secret:
            algorithm = "HS256"
        if mode == "jwt" and not algorithm:
            raise SettingsError("PRICEFEED_READ_AUTH=jwt needs PRICEFEED_JWT_SECRET (HS256) or "
                                "PRICEFEED_JWT_PUBLIC_KEY (RS256/ES256)")
        return {
            "read_auth": mode, "jwt_secret": secret, "jwt_public_key": public_key,
            "jwt_algorithm": algorithm,
            "jwt_audience": self.get("PRICEFEED_JWT_AUDIENCE", _claim_text, None),
            "jwt_issuer": self.get("PRICEFEED_JWT_ISSUER", _claim_text, None),
        }

    def redis_tls(self) -> dict[str, Any]:
        """Files for ``rediss://`` (docs/REDIS.md); a client key needs its certificate."""
        tls = {
            "redis_ca_file": self.get("PRICEFEED_REDIS_CA_FILE", _readable_file, None),
            "redis_cert_file": self.get("PRICEFEED_REDIS_CERT_FILE", _readable_file, None),
            "redis_key_file": self.get("PRICEFEED_REDIS_KEY_FILE", _readable_file, None),
        }
        if (tls["redis_cert_file"] is None) != (tls["redis_key_file"] is None):
            raise SettingsError("PRICEFEED_REDIS_CERT_FILE and PRICEFEED_REDIS_KEY_FILE go "
                                "together: set both for a client certificate, or neither")
        scheme = urlsplit(self.env.get("REDIS_URL", "").strip()).scheme
        given = [name for name, value in zip(_TLS_VARIABLES, tls.values(), strict=True) if value]
        if given and scheme != "rediss":
            raise SettingsError(f"{given[0]} needs a rediss:// REDIS_URL (TLS)")
        return tls


def _redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected redis://host:port/db, rediss://... or unix://...")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("the URL has no host")
    _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    return raw


def _secret(raw: str) -> Secret:
    """A token or key: visible ASCII only (it travels in an HTTP header or query)."""
    if not all("!" <= c <= "~" for c in raw):
        raise ValueError("use visible ASCII characters only (no spaces or control characters)")
    return Secret(raw)


# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (256 bits).
MIN_SECRET_BYTES: Final[int] = 32


def _jwt_secret(raw: str) -> Secret:
    secret = _secret(raw)
    if len(raw.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"an HS256 secret needs at least {MIN_SECRET_BYTES} bytes "
                         "(e.g. `openssl rand -hex 32`)")
    return secret


def _pem_text(raw: str) -> str:
    """The PEM itself, or the text of the file it names."""
    if raw.startswith("-----BEGIN"):
        return raw.replace("\\n", "\n")  # a one-line env value may spell newlines as \n
    try:
        with open(raw, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"neither PEM text nor a readable PEM file ({type(e).__name__})") from e


def _key_algorithm(raw: str) -> str:
    # Imported here: PyJWT and cryptography cost every process ~0.1 s of start-up, and
    # only a gateway with a public key needs them at this point.
    from shared.tokens import public_key_algorithm

    return public_key_algorithm(_pem_text(raw))


def _claim_text(raw: str) -> str:
    if len(raw) > 256:
        raise ValueError("at most 256 characters")
    return raw


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


def _interval(low: float, high: float) -> Callable[[str], float]:
    expected = f"expected a number of seconds between {low:g} and {high:g}"

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(expected) from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(expected)
        return value

    return parse


def _int_range(low: int, high: int) -> Callable[[str], int]:
    expected = f"expected a whole number between {low} and {high}"

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(expected) from None
        if not low <= value <= high:
            raise ValueError(expected)
        return value

    return parse


def _switch(raw: str) -> bool:
    value = raw.lower()
    if value not in ("on", "off", "true", "false", "1", "0"):
        raise ValueError("expected on or off")
    return value in ("on", "true", "1")


def _host(raw: str) -> str:
    if len(raw) > 253 or any(c.isspace() or c in "/@?#" for c in raw):
        raise ValueError("expected a host name or IP address")
    return raw


def _default_hosts(bind: str) -> tuple[str, ...]:
    """Localhost names when bound to loopback; any name otherwise (the operator knows the
    public names, PRICEFEED_ALLOWED_HOSTS lists them)."""
    return LOOPBACK_HOSTS if is_loopback(bind.strip("[]")) else ("*",)


def _hosts(raw: str) -> tuple[str, ...]:
    """Host names (``localhost``), IPs (``::1``), ``.example.com`` for a domain with its
    subdomains, or ``*`` for any; lower-case, without port."""
    out = tuple(h.strip().lower().removesuffix(".") for h in raw.split(",") if h.strip())
    if not out:
        raise ValueError("give at least one host name, or *")
    for name in out:
        bare = name.removeprefix("*.").removeprefix(".").strip("[]")
        bad = not bare or name.count(":") == 1 or any(c.isspace() or c in "/@?#*" for c in bare)
        if name != "*" and bad:
            raise ValueError(f"{name[:40]!r} is not a host name (without port), *, or .domain")
    return tuple(h.strip("[]") for h in out)


def _origins(raw: str) -> tuple[str, ...]:
    out = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in out:
        if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
            raise ValueError(f"origin {origin[:40]!r} is not http(s)://host[:port] or *")
    return out


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"expected a {' or '.join(schemes)} URL")
        _ = parts.port
        return raw.rstrip("/")

    return parse


_http_url = _url(("http", "https"))
_ws_url = _url(("ws", "wss"))


def _choice(options: frozenset[str], upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(sorted(options))}")
        return value

    return parse


def is_loopback(host: str) -> bool:
    """True when a server bound to ``host`` is reachable from this machine only."""
    return host == "localhost" or host.startswith("127.") or host == "::1"


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
