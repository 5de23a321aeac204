"""One pub/sub session: subscribe first, then read the snapshot, then every message.

Subscribing before the snapshot is read is what makes a snapshot plus live messages
gap-free: a tick published in between arrives as a message, and the consumer drops what
the snapshot already covers (by seq). The snapshot is read once Redis confirmed the
subscription, and again whenever it confirms it again: redis-py, when its own retries
are on, reconnects and resubscribes silently, and ticks may have been lost meanwhile.

Both the library subscriber (`shared.subscriber`) and the gateway's one subscription run
on `subscription`; each decides what its snapshot is and what a message means.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.redisio.clients import CONNECTION_ERRORS
from shared.redisio.sentinel import primary_moved

T = TypeVar("T")


class StaleSubscription(RedisConnectionError):
    """The subscription stopped delivering: no PONG to a PING, or a probe published to
    it did not come back."""


@dataclass(frozen=True, slots=True)
class DeliveryProbe:
    """A channel of the subscriber's own, and how to publish on it *through another
    connection* (the one ordinary publishes take). A probe that comes back proves that
    what is published reaches this subscription, which a PONG does not: a connection
    left on a node that no longer gets the published traffic (a demoted primary, a
    reused address) still answers PING (docs/RELIABILITY.md, "Delivery probe")."""

    channel: str
    publish: Callable[[str, bytes], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    """The snapshot read after Redis confirmed the subscription."""

    value: T


@dataclass(frozen=True, slots=True)
class Message:
    """One message published on a subscribed channel. ``more``: the next message on the
    same channel had already arrived when this one was handed over, so a consumer that
    fell behind may merge them before acting (the gateway does: docs/PERFORMANCE.md,
    "The direct path")."""

    channel: bytes | str
    data: Any
    more: bool = False


async def subscription(
    redis: Redis,
    channels: Sequence[str],
    read_snapshot: Callable[[], Awaitable[T]],
    *,
    poll_s: float = 1.0,
    probe_after_s: float | None = None,
    probe_timeout_s: float = 2.0,
    probe: DeliveryProbe | None = None,
) -> AsyncGenerator[Snapshot[T] | Message, None]:
    """Subscribe to ``channels``; yield `Snapshot(read_snapshot())` on each confirmation,
    and a `Message` per publication after the first one. Raises a connection error (from
    `CONNECTION_ERRORS`) when the connection breaks; the caller rebuilds the session.

    With ``probe_after_s``, a subscription quiet for that long is probed, and one that
    gives no answer within ``probe_timeout_s`` raises `StaleSubscription`: a connection
    that died without an error would otherwise wait for ever. The probe is a PING, or
    with ``probe`` a message published on its channel (also subscribed here, and never
    yielded).
    """
    pubsub = redis.pubsub()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    probe_channel = probe.channel.encode() if probe is not None else None
    tokens = itertools.count(1)
    try:
        await pubsub.subscribe(*channels, *([probe.channel] if probe is not None else []))
        first = channels[0].encode()
        subscribed = False
        last_seen, probe_sent, token = loop.time(), None, b""
        ahead: dict[str, Any] | None = None  # a message read to tell ``more``, not handled yet
        while True:
            if ahead is not None:
                message, ahead = ahead, None
            else:
                message = await pubsub.get_message(timeout=poll_s)
            honour_cancel(task)
            now = loop.time()
            if message is None:
                # A quiet subscription may be on a primary a failover left behind (it
                # hears no tick); redis-py would keep it there (shared/redisio/sentinel.py).
                # A pubsub-like object of the caller's own (a test double) may have no
                # connection attribute.
                if await primary_moved(redis, getattr(pubsub, "connection", None)):
                    raise StaleSubscription("the sentinels name another primary now")
                if probe_sent is not None and now - probe_sent > probe_timeout_s:
                    raise StaleSubscription(
                        "no answer to a PING on the subscription" if probe is None else
                        f"a probe published on {probe.channel} did not come back within "
                        f"{probe_timeout_s:g} s")
                if probe_after_s is not None and probe_sent is None \
                        and now - last_seen > probe_after_s:
                    if probe is None:
                        await pubsub.ping()
                    else:
                        token = b"%d" % next(tokens)
                        await probe.publish(probe.channel, token)
                    probe_sent = now
                continue
            kind = message["type"]
            if probe_channel is not None and _raw(message["channel"]) == probe_channel:
                if kind == "message" and _raw(message["data"]) == token:
                    last_seen, probe_sent = now, None
                continue
            if probe is None or kind == "message":  # with a probe, only delivery counts
                last_seen, probe_sent = now, None
            if kind == "subscribe" and _raw(message["channel"]) == first:
                subscribed = True
                yield Snapshot(await read_snapshot())
            elif kind == "message" and subscribed:
                ahead = await pubsub.get_message(timeout=0.0)  # only what has arrived
                more = (ahead is not None and ahead["type"] == "message"
                        and ahead["channel"] == message["channel"])
                yield Message(message["channel"], message["data"], more)
    finally:
        with contextlib.suppress(*CONNECTION_ERRORS):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def honour_cancel(task: asyncio.Task[Any] | None) -> None:
    """Raise the cancel that a Redis call swallowed (the task stays marked as cancelling).
    redis-py sends under ``asyncio.wait_for``, which on Python 3.11 drops a cancel that
    lands as the send completes (shared/redisio/connections.py; measured: 6 of 50 cancels
    of a GET loop). Our own clients send without it, but a library consumer may pass a
    client of its own, as the README's example does."""
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _raw(channel: bytes | str) -> bytes:
    return channel.encode() if isinstance(channel, str) else channel
