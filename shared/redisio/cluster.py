"""Redis Cluster as a topology (docs/CLUSTER.md).

``redis+cluster://[[user]:password@]h1:7000,h2:7001`` names seed nodes of a Cluster;
``rediss+cluster://`` is the same over TLS. Every name pricefeed writes carries a hash tag
(`shared.keys.Layout`): a partition's names live in one slot, the meta names in another.
So pricefeed does not need a client that routes each command by its key: it needs, for
each set of names, the one primary that serves their slot, and an ordinary client of that
primary — the same client, connection classes (cancel-safe) and fenced transaction as on
one server.

`ClusterTopology` keeps that map: it asks a seed (then any known node) for ``CLUSTER
SLOTS``, keeps one client per primary built by the profile, and hands out the client of a
`Keys`' slot. A ``MOVED`` reply, a failover or a lost node means the map is stale: the
caller calls `refresh`, which asks again (at most once per `REFRESH_MIN_S`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, RedisError, TryAgainError

from shared.keys import Keys

SCHEMES: Final[tuple[str, ...]] = ("redis+cluster", "rediss+cluster")
DEFAULT_CLUSTER_PORT: Final[int] = 6379
REFRESH_MIN_S: Final[float] = 0.2  # a burst of MOVED replies asks the Cluster once


class ClusterUnavailable(RedisError):
    """No seed or known node answered ``CLUSTER SLOTS``, or a slot has no primary."""


# What a node says when the slot map the caller holds is stale or the Cluster is between
# two maps (a failover, a migration): ask the Cluster again (`ClusterTopology.refresh`) and
# send again. ``MOVED`` is an `AskError`; redis-py names neither word in the message.
SLOT_ERRORS: Final[tuple[type[Exception], ...]] = (
    AskError, ClusterDownError, TryAgainError, ClusterUnavailable)


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """What a Cluster URL names."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def node_url(self, host: str, port: int) -> str:
        """A one-server URL of node ``host:port`` with this URL's credentials and TLS."""
        auth = ""
        if self.username or self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        shown = f"[{host}]" if ":" in host else host
        return f"{'rediss' if self.tls else 'redis'}://{auth}{shown}:{port}/0"


def parse_cluster_url(url: str) -> ClusterTarget:
    """The seeds and credentials of a Cluster URL; `ValueError` saying what is wrong
    (never showing the password)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"expected {' or '.join(s + '://' for s in SCHEMES)}")
    if parts.query or parts.fragment:
        raise ValueError("a Cluster URL takes no ?query or #fragment")
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Cluster has only db 0: redis+cluster://h1:7000,h2:7001")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    if not hosts:
        raise ValueError("name at least one seed node: redis+cluster://h1:7000,h2:7001")
    seeds = tuple(_address(h) for h in hosts.split(","))
    return ClusterTarget(seeds, unquote(username) or None, unquote(password) or None,
                         parts.scheme == "rediss+cluster")


def _address(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:7000
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"a seed node without a host: {item[:40]!r}")
    if not port:
        return host, DEFAULT_CLUSTER_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a bad port in {item[:40]!r}")
    return host, int(port)


def redacted_cluster_url(url: str) -> str:
    """``url`` with its password as ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{hosts}"


Address = tuple[str, int]
NodeClientFactory = Callable[[str], aioredis.Redis]


class ClusterTopology:
    """The primaries of a Cluster and one client each, found from ``target``'s seeds.

    ``make_client(url)`` builds the client of one node's URL (`shared.redisio.connect`
    with the caller's profile); clients are made lazily and kept while their node stays
    a primary."""

    def __init__(self, target: ClusterTarget, make_client: NodeClientFactory) -> None:
        self.target = target
        self._make_client = make_client
        self._slots: list[Address | None] = [None] * 16384
        self._clients: dict[Address, aioredis.Redis] = {}
        self._refreshed_at = 0.0
        self._lock = asyncio.Lock()
        self.generation = 0  # counts the refreshes that changed the map

    async def refresh(self, force: bool = False) -> None:
        """Ask the Cluster which primary serves each slot. Skipped when the last refresh
        is under `REFRESH_MIN_S` old (unless ``force``); raises `ClusterUnavailable`."""
        async with self._lock:
            if not force and time.monotonic() - self._refreshed_at < REFRESH_MIN_S:
                return
            candidates = list(dict.fromkeys([*self._clients, *self.target.seeds]))
            errors: list[str] = []
            for address in candidates:
                try:
                    slots = await self._ask(address)
                except (RedisError, OSError) as e:
                    errors.append(f"{address[0]}:{address[1]}: {type(e).__name__}")
                    continue
                await self._install(slots)
                self._refreshed_at = time.monotonic()
                return
            raise ClusterUnavailable("no Cluster node answered CLUSTER SLOTS ("
                                     + "; ".join(errors[:4]) + ")")

    async def _ask(self, address: Address) -> list[Any]:
        client = self._clients.get(address)
        if client is not None:
            return await _cluster_slots(client)
        client = self._make_client(self.target.node_url(*address))
        try:
            return await _cluster_slots(client)
        finally:
            await client.aclose()

    async def _install(self, reply: list[Any]) -> None:
        slots: list[Address | None] = [None] * 16384
        for start, end, primary, *_ in reply:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            address = (host or self.target.seeds[0][0], int(primary[1]))
            for slot in range(int(start), int(end) + 1):
                slots[slot] = address
        if slots != self._slots:
            self.generation += 1
        self._slots = slots
        live = {a for a in slots if a is not None}
        for address in [a for a in self._clients if a not in live]:
            await self._clients.pop(address).aclose()

    def address_of(self, keys: Keys) -> Address:
        """The primary serving ``keys``' slot, as last known (`refresh` first)."""
        address = self._slots[key_slot(keys.base.encode())]
        if address is None:
            raise ClusterUnavailable(f"no primary known for the slot of {keys.base}")
        return address

    def client_for(self, keys: Keys) -> aioredis.Redis:
        """The client of the primary serving ``keys``' slot."""
        return self.client_at(self.address_of(keys))

    def client_at(self, address: Address) -> aioredis.Redis:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = self._make_client(self.target.node_url(*address))
        return client

    def group(self, scopes: Mapping[int, Keys]) -> dict[Address, list[int]]:
        """``scopes`` (partition -> Keys) grouped by the primary serving each."""
        out: dict[Address, list[int]] = {}
        for index, keys in scopes.items():
            out.setdefault(self.address_of(keys), []).append(index)
        return out

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


async def _cluster_slots(client: aioredis.Redis) -> list[Any]:
    reply = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
    return list(reply)
