"""Settings of the gateway: where it listens, who may connect, how streams are paced,
and read access (docs/ACCESS.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from shared.errors import SettingsError
from shared.settings.common import Reader, Secret, choice, int_range, interval, secret

READ_AUTH_MODES: Final[frozenset[str]] = frozenset({"none", "jwt"})
# The Host names a gateway bound to a loopback address accepts unless told otherwise.
LOOPBACK_HOSTS: Final[tuple[str, ...]] = ("localhost", "127.0.0.1", "::1")
# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (256 bits).
MIN_SECRET_BYTES: Final[int] = 32


@dataclass(frozen=True)
class GatewaySettings:
    """What the gateway needs besides `CommonSettings`."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_clients: int = 20_000
    max_stream_tickers: int = 100
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    api_token: Secret = field(default_factory=lambda: Secret(""))
    ping_interval_s: float = 15.0
    send_timeout_s: float = 5.0
    read_auth: str = "none"
    jwt_secret: Secret = field(default_factory=lambda: Secret(""))
    jwt_public_key: str = ""  # PEM text (read from the file when a path was given)
    jwt_algorithm: str = ""  # HS256 with a secret, RS256/ES256 from the public key's type
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    max_hz: float | None = None


def read_gateway(r: Reader) -> dict[str, Any]:
    """The `GatewaySettings` fields from the environment."""
    host = r.get("PRICEFEED_HOST", _host, GatewaySettings.host)
    return {
        "host": host,
        "port": r.get("PRICEFEED_PORT", int_range(1, 65535), GatewaySettings.port),
        "max_clients": r.get("PRICEFEED_MAX_CLIENTS", int_range(1, 1_000_000), 20_000),
        "max_stream_tickers": r.get("PRICEFEED_MAX_STREAM_TICKERS", int_range(1, 10_000), 100),
        "cors_origins": r.get("PRICEFEED_CORS_ORIGINS", _origins, GatewaySettings.cors_origins),
        "allowed_hosts": r.get("PRICEFEED_ALLOWED_HOSTS", _hosts, _default_hosts(host)),
        "api_token": r.get("PRICEFEED_API_TOKEN", secret, Secret("")),
        "ping_interval_s": r.get("PRICEFEED_PING_INTERVAL", interval(0.05, 300), 15.0),
        "send_timeout_s": r.get("PRICEFEED_SEND_TIMEOUT", interval(0.1, 120), 5.0),
        "max_hz": r.get("PRICEFEED_MAX_HZ", interval(0.1, 1000), None),
        **_access(r),
    }


def _access(r: Reader) -> dict[str, Any]:
    """Read access (docs/ACCESS.md): the mode and, for ``jwt``, exactly one key."""
    mode = r.get("PRICEFEED_READ_AUTH", choice(READ_AUTH_MODES), "none")
    if all(r.env.get(n, "").strip() for n in ("PRICEFEED_JWT_SECRET",
                                              "PRICEFEED_JWT_PUBLIC_KEY")):
        raise SettingsError("PRICEFEED_JWT_SECRET and PRICEFEED_JWT_PUBLIC_KEY are both "
                            "set: give one (HS256 secret, or RS256/ES256 public key)")
    jwt_secret = r.get("PRICEFEED_JWT_SECRET", _jwt_secret, Secret(""))
    public_key = r.get("PRICEFEED_JWT_PUBLIC_KEY", _pem_text, "")
    algorithm = ""
    if public_key:
        algorithm = r.get("PRICEFEED_JWT_PUBLIC_KEY", _key_algorithm, "")
    elif jwt_secret:
        algorithm = "HS256"
    if mode == "jwt" and not algorithm:
        raise SettingsError("PRICEFEED_READ_AUTH=jwt needs PRICEFEED_JWT_SECRET (HS256) or "
                            "PRICEFEED_JWT_PUBLIC_KEY (RS256/ES256)")
    return {
        "read_auth": mode, "jwt_secret": jwt_secret, "jwt_public_key": public_key,
        "jwt_algorithm": algorithm,
        "jwt_audience": r.get("PRICEFEED_JWT_AUDIENCE", _claim_text, None),
        "jwt_issuer": r.get("PRICEFEED_JWT_ISSUER", _claim_text, None),
    }


def _jwt_secret(raw: str) -> Secret:
    value = secret(raw)
    if len(raw.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"an HS256 secret needs at least {MIN_SECRET_BYTES} bytes "
                         "(e.g. `openssl rand -hex 32`)")
    return value


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


def is_loopback(host: str) -> bool:
    """True when a server bound to ``host`` is reachable from this machine only."""
    return host == "localhost" or host.startswith("127.") or host == "::1"
