"""One primary's subscription on a Cluster: its partitions' ``prices`` shard channels (and
the control channel when it serves the meta slot), read by one task (`gateway.cluster.feed`).

Subscribe first, then read each partition's view once its ``SSUBSCRIBE`` is confirmed:
nothing published in between is lost, and the hub drops what the snapshot covered (by
seq), as on one server (`shared.redisio.session`). The session ends with an error, for
the feed to resubscribe on the node serving the slot now, when the connection breaks, a
``sunsubscribe`` is pushed (the slot moved: Redis unsubscribes a slot's shard channels
from a node that stops serving it), a read gets ``MOVED``, or a PING sent after
``probe_after_s`` of quiet is not answered within ``probe_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.hub import NO_EPOCH
from gateway.reads import epoch_text, read_view
from gateway.updates import EncodedUpdate
from shared.bars import INTERVALS
from shared.codec import decode_map, encode_update
from shared.errors import CodecError
from shared.logs import LogThrottle
from shared.models import PriceUpdate
from shared.redisio import CONNECTION_ERRORS, StaleSubscription, honour_cancel
from shared.redisio.cluster import Address

if TYPE_CHECKING:
    from gateway.cluster.feed import ClusterPriceFeed

log = logging.getLogger(__name__)
_malformed_log = LogThrottle(log, 10.0)

POLL_S = 0.5
# Messages already received are handled as one batch, at most this many: the ticks of all
# the node's partitions reach the hub with no await between them, so a client gets one
# event for them rather than one per partition (1,000 clients x 10 Hz over P = 16: without
# it the gateway fell behind, docs/PERFORMANCE.md "The gateway on a Cluster").
DRAIN_MAX = 256


class SlotMoved(RedisError):
    """Redis unsubscribed a shard channel of ours: its slot is served elsewhere now."""


class NodeSession:
    """The subscription of the partitions ``parts`` on the primary at ``address``."""

    def __init__(self, feed: ClusterPriceFeed, address: Address, parts: frozenset[int]) -> None:
        self.feed = feed
        self.address = address
        self.parts = parts
        layout = feed.layout
        self.keys = {i: layout.meta if i < 0 else layout.partition(i) for i in parts}
        self.channels = {(k.control if i < 0 else k.prices).encode(): i
                         for i, k in self.keys.items()}
        # A partition's bar closes share its slot: subscribed in the same command.
        self.bars: dict[int, list[str]] = {
            i: [k.bar_channel(name) for name in INTERVALS] if i >= 0 and feed.on_bars else []
            for i, k in self.keys.items()}
        self.bar_channels = {c.encode() for names in self.bars.values() for c in names}
        self.seq_bound = dict.fromkeys(parts, 0)  # each partition's NS:{pI}:seq last read
        self.client: aioredis.Redis = feed.topology.client_at(address)
        # The delivery probe (docs/RELIABILITY.md) goes on a shard channel of a slot this
        # node serves, published through the gateway's pooled clients.
        self.probe_keys = self.keys[min(parts, key=lambda i: (i < 0, i))]
        self.probe_channel = (self.probe_keys.probe(feed.instance).encode()
                              if feed.publisher is not None else None)
        self.tokens = itertools.count(1)
        self.token = b""

    async def run(self) -> None:
        """Subscribe and deliver until the session fails (raises) or is cancelled."""
        pubsub = self.client.pubsub()
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        try:
            for channel, index in self.channels.items():  # one command per slot
                await pubsub.ssubscribe(channel.decode(), *self.bars[index])
            if self.probe_channel is not None:
                await pubsub.ssubscribe(self.probe_channel.decode())
            last_seen, ping_sent = loop.time(), None
            while True:
                message = await pubsub.get_message(timeout=POLL_S)
                honour_cancel(task)
                now = loop.time()
                if message is None:
                    ping_sent = await self._probe(pubsub, now, last_seen, ping_sent)
                    continue
                batch = [message]
                while len(batch) < DRAIN_MAX:  # what has arrived already, without waiting
                    more = await pubsub.get_message(timeout=0.0)
                    if more is None:
                        break
                    batch.append(more)
                if any(self._alive(m) for m in batch):
                    last_seen, ping_sent = now, None
                await self._handle_batch(batch)
        finally:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _alive(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` proves delivery: with a probe, only a published message
        does (a PONG or a confirmation only proves a live connection)."""
        if self.probe_channel is None:
            return True
        if message["type"] != "smessage":
            return False
        return bool(message["channel"] != self.probe_channel or message["data"] == self.token)

    async def _probe(self, pubsub: Any, now: float, last_seen: float,
                     ping_sent: float | None) -> float | None:
        feed = self.feed
        if ping_sent is not None and now - ping_sent > feed.probe_timeout_s:
            raise StaleSubscription(
                f"{'a probe' if self.probe_channel else 'a PING'} on {self.address[0]}:"
                f"{self.address[1]}'s subscription did not come back within "
                f"{feed.probe_timeout_s:g} s")
        if ping_sent is None and now - last_seen > feed.probe_after_s:
            if feed.publisher is None or self.probe_channel is None:
                await pubsub.ping()
            else:
                self.token = b"%d" % next(self.tokens)
                await feed.publisher.call(self.probe_keys, self._publish_probe)
            return now
        return ping_sent

    async def _publish_probe(self, client: aioredis.Redis) -> None:
        assert self.probe_channel is not None
        await client.spublish(self.probe_channel.decode(), self.token)

    async def _handle_batch(self, batch: list[dict[str, Any]]) -> None:
        """``batch`` in order; runs of price messages go to the hub together."""
        prices: list[tuple[int, bytes]] = []
        for message in batch:
            channel = message.get("channel")
            index = self.channels.get(channel) if isinstance(channel, bytes) else None
            if message["type"] == "smessage" and index is not None and index >= 0:
                prices.append((index, message["data"]))
                continue
            if prices:
                await self.on_prices(prices)
                prices = []
            await self._handle(message)
        if prices:
            await self.on_prices(prices)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message.get("channel")
        index = self.channels.get(channel) if isinstance(channel, bytes) else None
        if kind == "sunsubscribe":
            raise SlotMoved(f"{channel!r} unsubscribed by the node: its slot moved")
        if index is None:
            if kind == "smessage" and channel in self.bar_channels and self.feed.on_bars:
                self.feed.on_bars(channel, message["data"])
            return
        if kind == "ssubscribe":
            if index >= 0:
                await self._resync(index)
            self.feed.opened(index)
        elif kind == "smessage":
            if index < 0:
                if self.feed.on_control is not None:
                    self.feed.on_control()
            else:
                await self.on_prices([(index, message["data"])])

    async def _resync(self, index: int) -> None:
        keys = self.keys[index]
        view = await read_view(self.client, keys)
        self.feed.flush()  # what was read before the resync goes to the hub before it
        self.feed.hub.resync_partition(index, view.cache.items(), view.epoch, view.top)
        self.seq_bound[index] = view.cache.last_seq or 0

    async def on_prices(self, messages: list[tuple[int, bytes]]) -> None:
        """Tick messages of this node's partitions ``(index, payload)``, in order: each
        decoded once, all checked in one round trip, then all handed to the hub."""
        decoded: list[tuple[int, dict[str, PriceUpdate]]] = []
        for index, payload in messages:
            try:
                updates = decode_map(payload)
                self._own(index, updates)
            except CodecError as e:
                self._malformed(index, e)
                continue
            if updates:
                decoded.append((index, updates))
        if not decoded:
            return
        indexes = sorted({index for index, _ in decoded})
        async with self.client.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.get(self.keys[index].epoch)
                pipe.get(self.keys[index].seq)
            raw = await pipe.execute()
        read = {index: (raw[2 * i], raw[2 * i + 1]) for i, index in enumerate(indexes)}
        ticks = []
        for index, updates in decoded:
            try:
                if not await self._check(index, updates, *read[index]):
                    continue
            except CodecError as e:
                self._malformed(index, e)
                continue
            self.feed.delivered(self.address)
            tick = {t: EncodedUpdate(u.seq, encode_update(u)) for t, u in updates.items()}
            self.feed.stats.newest_update_ts = max(u.timestamp for u in updates.values())
            ticks.append((index, tick, max(u.seq for u in updates.values())))
        self.feed.publish(ticks)

    def _malformed(self, index: int, error: CodecError) -> None:
        self.feed.stats.malformed += 1
        _malformed_log.warning("skipping malformed message on %s: %s",
                               self.keys[index].prices, error)

    def _own(self, index: int, updates: dict[str, PriceUpdate]) -> None:
        """`CodecError` for a ticker of another partition on partition ``index``."""
        keys, layout = self.keys[index], self.feed.layout
        if any(layout.of(t) != keys for t in updates):
            raise CodecError(f"a ticker of another partition on {keys.prices}")

    async def _check(self, index: int, updates: dict[str, PriceUpdate],
                     raw_epoch: bytes | None, raw_seq: bytes | None) -> bool:
        """As `gateway.price_feed.PriceFeed._check`, for one partition, on the epoch and seq
        just read: False when the partition's epoch changed (it was resynced instead);
        `CodecError` for a seq beyond ``NS:{pI}:seq``."""
        keys = self.keys[index]
        if raw_epoch is None:  # wiped under us: the next tick brings the new epoch
            return False
        epoch, hub = epoch_text(raw_epoch), self.feed.hub
        if hub.epochs[index] == NO_EPOCH:
            hub.first_epoch(index, epoch)
        elif epoch != hub.epochs[index]:
            log.warning("%s changed: partition %d holds another dataset now", keys.epoch, index)
            await self._resync(index)
            return False
        seq = int(raw_seq) if raw_seq and raw_seq.isdigit() else 0
        self.seq_bound[index] = max(self.seq_bound[index], seq)
        top = max(u.seq for u in updates.values())
        if top > self.seq_bound[index]:
            raise CodecError(f"seq {top} is beyond {keys.seq} ({self.seq_bound[index]})")
        return True
