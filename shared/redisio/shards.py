"""One Cluster node's share of a reader (docs/CLUSTER.md "Reading"): the partitions it
serves, subscribed on ONE connection with one ``SSUBSCRIBE`` per partition (a command
takes the channels of one slot), read by its own task.

When Redis confirms a partition's subscription the task reads that partition's epoch and
snapshot, then passes on each message; a message whose partition's epoch is no longer the
one its snapshot saw is replaced by a fresh snapshot (that tick is in it). What it reads
goes on a queue as `NodeSnapshot`, `NodeTick` and, last, `NodeEnded` with the error that
ended it: `shared.cluster_subscriber` merges them and decides what an error means.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.keys import Keys
from shared.models import PriceUpdate
from shared.redisio.clients import CONNECTION_ERRORS
from shared.redisio.latest import read_latest
from shared.redisio.session import StaleSubscription, honour_cancel

POLL_S: Final[float] = 1.0
QUIET_S: Final[float] = 5.0  # a node silent this long is sent a PING on its subscription
PING_TIMEOUT_S: Final[float] = 3.0


class SlotMoved(RedisConnectionError):
    """The server ended a subscription we did not leave: its slot moved to another node."""


# What a node task reads: per partition, its names and its wanted tickers (None: all).
Partitions = Mapping[int, tuple[Keys, frozenset[str] | None]]


async def read_partition(redis: Redis, keys: Keys, tickers: Collection[str] | None
                         ) -> tuple[Any, dict[str, PriceUpdate]]:
    """A partition's epoch, then its cached updates (of ``tickers`` only, when given)."""
    return await redis.get(keys.epoch), await read_latest(redis, keys, tickers)


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    reader: int
    partition: int
    epoch: Any
    state: dict[str, PriceUpdate]


@dataclass(frozen=True, slots=True)
class NodeTick:
    reader: int
    partition: int
    payload: Any


@dataclass(frozen=True, slots=True)
class NodeEnded:
    reader: int
    error: BaseException


NodeEvent = NodeSnapshot | NodeTick | NodeEnded


async def read_node(ident: int, client: Redis, partitions: Partitions,
                    out: asyncio.Queue[NodeEvent]) -> None:
    """One node's task (``ident``): ``partitions``' subscriptions on one connection of
    ``client``. It ends only by being cancelled or by sending `NodeEnded` (so no error of
    it goes unseen)."""
    try:
        await _node_session(ident, client, partitions, out)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # `follow` decides: re-plan, or raise it to the caller
        await out.put(NodeEnded(ident, e))


async def _node_session(ident: int, client: Redis, partitions: Partitions,
                        out: asyncio.Queue[NodeEvent]) -> None:
    by_channel = {keys.prices.encode(): i for i, (keys, _) in partitions.items()}
    epochs: dict[int, Any] = {}  # as read by this connection's snapshots
    pubsub = client.pubsub()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    try:
        for keys, _ in partitions.values():
            await pubsub.ssubscribe(keys.prices)
        heard, pinged = loop.time(), False
        while True:
            message = await pubsub.get_message(timeout=POLL_S)
            honour_cancel(task)
            if message is None:
                pinged = await _check_quiet(pubsub, loop.time() - heard, pinged)
                continue
            heard, pinged = loop.time(), False
            kind, channel = message["type"], _raw(message["channel"])
            index = by_channel.get(channel) if channel is not None else None
            if index is None:
                continue  # a PONG
            keys, wanted = partitions[index]
            if kind == "sunsubscribe":
                raise SlotMoved(f"the server ended the subscription to {keys.prices}")
            if kind == "ssubscribe" or (kind == "smessage"
                                        and await client.get(keys.epoch) != epochs.get(index)):
                # A confirmation (the first, or redis-py's own resubscription) or a
                # partition whose epoch changed: read its snapshot; this tick is in it.
                epochs[index], state = await read_partition(client, keys, wanted)
                await out.put(NodeSnapshot(ident, index, epochs[index], state))
            elif kind == "smessage":
                await out.put(NodeTick(ident, index, message["data"]))
    finally:
        with contextlib.suppress(*CONNECTION_ERRORS):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _check_quiet(pubsub: Any, quiet_s: float, pinged: bool) -> bool:
    """PING a subscription quiet for `QUIET_S`; raise when the PING went unanswered for
    `PING_TIMEOUT_S` (a connection that died without an error would wait for ever)."""
    if pinged and quiet_s > QUIET_S + PING_TIMEOUT_S:
        raise StaleSubscription("no answer to a PING on a node's subscription")
    if not pinged and quiet_s > QUIET_S:
        await pubsub.ping()
        return True
    return pinged


def _raw(channel: bytes | str | None) -> bytes | None:
    return channel.encode() if isinstance(channel, str) else channel
