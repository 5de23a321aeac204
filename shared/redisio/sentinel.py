"""Redis Sentinel as a topology (docs/REDIS.md, "Sentinel").

``redis+sentinel://[[user]:password@]h1:26379,h2:26379/<master>/<db>`` names the sentinels
and the master group they watch; ``rediss+sentinel://`` is the same over TLS, to the
sentinels and to the servers. The client asks the sentinels for the primary's address each
time it opens a connection, so after a failover every new connection reaches the new
primary. A connection still open to a demoted primary answers writes with ``-READONLY``:
redis-py's Sentinel connection then drops itself (``read_response``), and the producer's
tick writer, which reads its replies past ``read_response``, drops it too
(`producer.transaction`).

The URL's user and password authenticate the sentinels as well as the servers: one
credential for one deployment (set the same ``requirepass`` or ACL user on the sentinels),
and a sentinel that told anyone where the primary is would be a way around it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redisio.connections import CANCEL_SAFE

if TYPE_CHECKING:
    from shared.redisio.clients import Profile

SCHEMES: Final[tuple[str, ...]] = ("redis+sentinel", "rediss+sentinel")
CHECK_S: Final[float] = 1.0  # how stale a pool's idea of the primary may get
DEFAULT_SENTINEL_PORT: Final[int] = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a Sentinel URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, master group, db and credentials of a Sentinel URL; `ValueError`
    saying what is wrong (never showing the password)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"expected {' or '.join(s + '://' for s in SCHEMES)}")
    if parts.query or parts.fragment:
        raise ValueError("a Sentinel URL takes no ?query or #fragment")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = tuple(_address(h) for h in hosts.split(","))
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if path and path[-1] == "":
        path.pop()
    if not path or not path[0]:
        raise ValueError("name the master group: redis+sentinel://h1:26379,h2:26379/<master>/0")
    if len(path) > 2:
        raise ValueError("expected /<master>/<db> after the sentinels")
    db = path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"the db must be a number, not {db[:20]!r}")
    return SentinelTarget(sentinels, path[0], int(db), unquote(username) or None,
                          unquote(password) or None, parts.scheme == "rediss+sentinel")


def _address(item: str) -> tuple[str, int]:
    host, port = item, ""
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host:
        raise ValueError("a sentinel has no host (expected h1:26379,h2:26379)")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"a sentinel's port must be 1-65535, not {port[:10]!r}")
    return host, int(port) if port else DEFAULT_SENTINEL_PORT


def redacted_sentinel_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, _ = rest.split("/", 1)[0].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{rest[len(userinfo) + 1:]}"


class SentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool that follows a failover the old primary lived through, and
    closes its sentinels' connections when it is closed (a client is built per gateway
    subscription session, and each would otherwise leave one connection open on every
    sentinel).

    redis-py asks the sentinels only when a connection opens, and drops one only on
    ``-READONLY``. After ``SENTINEL FAILOVER`` (or a partition) the old primary stays a
    primary until the sentinels reconfigure it, which Redis 7 does some 8 s later
    (measured: tests/system/test_sentinel.py timed out on the first version of this pool);
    writes meanwhile land on it and are lost when it becomes a replica. So a connection
    handed out is checked against the sentinels' primary at most every `CHECK_S`, and
    one to another server is reconnected (docs/REDIS.md, "Sentinel").
    """

    _checked_at = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        conn = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        try:
            if await self.moved(conn):
                await conn.disconnect()
                await conn.connect()  # asks the sentinels again
        except BaseException:
            await self.release(conn)
            raise
        return conn

    async def moved(self, conn: Any) -> bool:
        """True when the sentinels name another primary than ``conn``'s (asked at most
        every `CHECK_S`); False when no sentinel answers: the primary in use may well be
        fine."""
        now = time.monotonic()
        if not self.is_master or now - self._checked_at < CHECK_S:
            return False
        self._checked_at = now
        try:
            address = await self.get_master_address()  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError):
            return False
        return conn.host is not None and (conn.host, conn.port) != tuple(address)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # a close, not the pool moving to a new primary
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


class BlockingSentinelPool(SentinelPool, aioredis.BlockingConnectionPool):
    """`SentinelPool` with a bound on its connections, as ``POOLED`` asks."""


async def primary_moved(redis: aioredis.Redis, conn: Any) -> bool:
    """True when ``conn`` (e.g. a subscription's) is on a server the sentinels no longer
    name as the primary; always False for a client of one server."""
    pool = redis.connection_pool
    return conn is not None and isinstance(pool, SentinelPool) and await pool.moved(conn)


def sentinel_client(url: str, profile: Profile, tls: Mapping[str, Any]) -> aioredis.Redis:
    """The builder of `shared.redisio.clients.TOPOLOGIES` for a Sentinel URL."""
    target = parse_sentinel_url(url)
    auth = {k: v for k, v in (("username", target.username), ("password", target.password))
            if v is not None}
    ssl: dict[str, Any] = {"ssl": True, **tls} if target.tls else {}
    # A sentinel that does not answer is skipped for the next one (redis-py's
    # discover_master), so a retry of the same one would only delay the failover.
    sentinel_options = {"socket_connect_timeout": profile.connect_timeout_s,
                        "socket_timeout": profile.connect_timeout_s,
                        "retry": Retry(NoBackoff(), 0), **auth, **ssl}
    manager = Sentinel(  # type: ignore[no-untyped-call]
        target.sentinels, sentinel_kwargs=sentinel_options)
    for node in manager.sentinels:
        pool = node.connection_pool
        pool.connection_class = CANCEL_SAFE.get(pool.connection_class, pool.connection_class)
    options: dict[str, Any] = {**profile.options(), **auth, **ssl, "db": target.db}
    pool_class: type[SentinelPool] = SentinelPool
    if profile.pool_size is not None:
        pool_class = BlockingSentinelPool
        options.update(max_connections=profile.pool_size, timeout=profile.pool_timeout_s)
    client: aioredis.Redis = manager.master_for(target.master, connection_pool_class=pool_class,
                                                **options)
    data_pool = client.connection_pool
    # As for one server (shared/redisio/clients.py): the twin whose send keeps a cancel.
    data_pool.connection_class = CANCEL_SAFE[data_pool.connection_class]
    return client
