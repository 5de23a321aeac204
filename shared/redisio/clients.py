"""The one place that builds Redis clients, from the settings (docs/REDIS.md).

Every client of every pricefeed process comes from `connect`: the URL and its TLS files
from the settings, and a `Profile` saying how the client behaves (timeouts, redis-py's
own retries, a bounded pool, a health check). The profiles in use:

- `SERVICE`: the producer's client and the gateway's subscription. redis-py's retries
  are off: the caller retries with its own logged backoff, and a silent reconnect of a
  subscription would lose ticks unnoticed (docs/RELIABILITY.md).
- `POOLED`: the gateway's shared client for reads and writes: at most `POOL_SIZE`
  connections; a command found on a dead connection is retried ONCE on a fresh one (a
  restart, ``CLIENT KILL`` or Redis's idle ``timeout`` otherwise failed one request with
  a 503 per dead pooled connection), timeouts are not (a Redis that hangs must not cost
  twice the socket timeout); a connection idle for `HEALTH_CHECK_S` is PINGed first.
- `CONSUMER`: a long-lived reader such as `pricefeed watch`: redis-py's default retries,
  no socket timeout (a quiet feed is not a dead one), a health check.
- `probe`: a short-lived check (`pricefeed up`), with one timeout for everything.

The topology seam: the URL's scheme picks a builder in `TOPOLOGIES`, a function
``(url, profile, tls) -> Redis``; no caller knows which one it got:

- one server: ``redis://``, ``rediss://``, ``unix://``;
- Redis Sentinel: ``redis+sentinel://h1:26379,h2:26379/<master>/<db>`` and its TLS form
  ``rediss+sentinel://`` (`shared.redisio.sentinel`: redis-py's ``Sentinel.master_for``,
  its pool and connection classes with the same cancel-safe send).

A Redis Cluster (``redis+cluster://h1:7000,h2:7001``, ``rediss+cluster://``) is not one
client but one per primary: `cluster_topology` builds a `ClusterTopology` whose node clients
come from `connect` with the caller's profile (docs/CLUSTER.md); `connect` refuses a
Cluster URL, since a caller that does not know which node it needs would be wrong there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redisio.cluster import SCHEMES as CLUSTER_SCHEMES
from shared.redisio.cluster import ClusterTopology, parse_cluster_url, redacted_cluster_url
from shared.redisio.connections import CANCEL_SAFE
from shared.redisio.sentinel import redacted_sentinel_url, sentinel_client

# What a lost or refused connection looks like from redis-py.
CONNECTION_ERRORS: Final[tuple[type[BaseException], ...]] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)

# Snapshot reads of thousands of clients connecting at once share this many connections
# instead of opening one each.
POOL_SIZE: Final[int] = 32
HEALTH_CHECK_S: Final[int] = 10


class RedisSettings(Protocol):
    """What the client builder reads from the settings."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_ca_file(self) -> str | None: ...
    @property
    def redis_cert_file(self) -> str | None: ...
    @property
    def redis_key_file(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Profile:
    """How one client behaves. ``retries``: None keeps redis-py's default; 0 turns its
    retries off; N retries a command N times on a fresh connection after a connection
    error (never after a timeout). ``pool_size``: a blocking pool of that many
    connections, waited for at most ``pool_timeout_s``; None, redis-py's own pool."""

    connect_timeout_s: float | None = 2.0
    socket_timeout_s: float | None = 5.0
    retries: int | None = 0
    pool_size: int | None = None
    pool_timeout_s: float = 5.0
    health_check_s: int = 0

    def options(self) -> dict[str, Any]:
        """redis-py keyword arguments of this profile (without the pool's own)."""
        out: dict[str, Any] = {"socket_connect_timeout": self.connect_timeout_s,
                               "socket_timeout": self.socket_timeout_s}
        if self.retries == 0:
            out["retry"] = Retry(NoBackoff(), 0)
        elif self.retries is not None:
            out["retry"] = Retry(NoBackoff(), self.retries,
                                 supported_errors=(RedisConnectionError,))
            out["retry_on_error"] = [RedisConnectionError]
        if self.health_check_s:
            out["health_check_interval"] = self.health_check_s
        return out


SERVICE: Final = Profile()
POOLED: Final = Profile(retries=1, pool_size=POOL_SIZE, health_check_s=HEALTH_CHECK_S)
CONSUMER: Final = Profile(socket_timeout_s=None, retries=None, health_check_s=HEALTH_CHECK_S)


def probe(timeout_s: float) -> Profile:
    """A short-lived check: ``timeout_s`` to connect and for each reply."""
    return replace(SERVICE, connect_timeout_s=timeout_s, socket_timeout_s=timeout_s,
                   retries=None)


Builder = Callable[[str, Profile, Mapping[str, Any]], aioredis.Redis]


def _single_server(url: str, profile: Profile, tls: Mapping[str, Any]) -> aioredis.Redis:
    options = {**profile.options(), **tls}
    pool: aioredis.ConnectionPool
    if profile.pool_size is None:
        pool = aioredis.ConnectionPool.from_url(url, **options)
    else:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=profile.pool_size, timeout=profile.pool_timeout_s, **options)
    # The URL's scheme chose the class; take its twin whose send cannot lose a cancel
    # (shared/redisio/connections.py). Connections are made lazily, so none exists yet.
    pool.connection_class = CANCEL_SAFE.get(pool.connection_class, pool.connection_class)
    return aioredis.Redis.from_pool(pool)  # the client owns and closes the pool


# The URL scheme's topology (see the module docstring).
TOPOLOGIES: Final[Mapping[str, Builder]] = {
    "redis": _single_server,
    "rediss": _single_server,
    "unix": _single_server,
    "redis+sentinel": sentinel_client,
    "rediss+sentinel": sentinel_client,
}
TLS_SCHEMES: Final[tuple[str, ...]] = ("rediss", "rediss+sentinel", "rediss+cluster")


def connect(settings: RedisSettings, profile: Profile = SERVICE, *,
            url: str | None = None) -> aioredis.Redis:
    """A client of ``settings.redis_url`` (or ``url``, e.g. a private server's) behaving
    as ``profile``; it connects lazily, on first use."""
    target = settings.redis_url if url is None else url
    scheme = urlsplit(target).scheme
    if scheme in CLUSTER_SCHEMES:
        raise ValueError("a Cluster URL names no one server: use cluster_topology")
    build = TOPOLOGIES.get(scheme)
    if build is None:
        raise ValueError(f"no Redis topology for the URL scheme {scheme!r}")
    return build(target, profile, tls_options(settings, target))


def cluster_topology(settings: RedisSettings, profile: Profile = SERVICE) -> ClusterTopology:
    """The primaries of the Cluster ``settings.redis_url`` names, each node's client
    behaving as ``profile`` with the URL's credentials and TLS (docs/CLUSTER.md). Nothing
    connects until `ClusterTopology.refresh`."""
    target = parse_cluster_url(settings.redis_url)
    tls = tls_options(settings, settings.redis_url)
    return ClusterTopology(target, lambda url: _single_server(url, profile, tls))


def tls_options(settings: RedisSettings, url: str) -> dict[str, Any]:
    """The TLS keyword arguments for ``rediss://`` and ``rediss+sentinel://`` (docs/REDIS.md:
    the server's certificate is always verified); none for another scheme. The password or
    ACL user travel in the URL."""
    if urlsplit(url).scheme not in TLS_SCHEMES:
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if settings.redis_ca_file:
        options["ssl_ca_certs"] = settings.redis_ca_file
    if settings.redis_cert_file:
        options["ssl_certfile"] = settings.redis_cert_file
        options["ssl_keyfile"] = settings.redis_key_file
    return options


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for a log line."""
    if "+sentinel://" in url:
        return redacted_sentinel_url(url)
    if "+cluster://" in url:
        return redacted_cluster_url(url)
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
