"""The process's one Redis subscription: ``NS:prices`` decoded once, into the hub.

The session is `shared.redisio.subscription`: subscribe, then read the stream view, then
every tick. redis-py's own reconnect would resubscribe silently and the hub would never
know that ticks were lost, so the subscription's client is built with retries off
(`gateway.connections`): every failure surfaces here, the whole session is rebuilt with
capped backoff, and the hub hands every client a fresh snapshot (docs/RELIABILITY.md). A
subscription that has been quiet is probed: with a ``publisher`` (the gateway's shared
client, the path every other publish takes) a token is published on this gateway's own
channel ``NS:probe:{instance}`` and must come back on the subscription, which proves
delivery and not only a live connection (docs/RELIABILITY.md, "Delivery probe"); without
one, a PING. A probe that does not come back (`StaleSubscription`, a connection error)
rebuilds the session, and readiness fails until the new one holds its snapshot.

A session that subscribes but is cut before it delivers a tick did not work: the backoff
is reset, and the losses forgotten, only by a tick delivered. A subscription cut again and
again (Redis's ``client-output-buffer-limit pubsub`` below the size of one tick cuts it on
every tick) is `flapping`: one WARNING per 10 s with the count, and readiness says so.

A wiped Redis keeps the subscription but changes ``NS:epoch``: the epoch is read with
every tick (one GET beside the ``NS:seq`` check, one round trip), and a new one gives
every client `event: reset` and the new dataset's snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import aclosing

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.hub import NO_EPOCH, Hub
from gateway.reads import StreamView, epoch_text, read_view
from gateway.stats import Stats
from gateway.updates import EncodedUpdate
from shared.backoff import Backoff
from shared.codec import decode_map, encode_update
from shared.errors import CodecError
from shared.logs import LogThrottle
from shared.models import PriceUpdate
from shared.redisio import DeliveryProbe, Snapshot, subscription
from shared.settings import Settings

log = logging.getLogger(__name__)

# A subscription lost this many times within FLAP_WINDOW_S, with no tick delivered in
# between, "keeps dropping": a WARNING with the count, and readiness is degraded.
FLAP_LOSSES = 3
FLAP_WINDOW_S = 30.0
# Tick messages merged into one hand-over at most (they arrived while the gateway was
# behind); a bound on the work between two looks at the subscription, not a tuning knob.
MERGE_MAX = 256


class PriceFeed:
    """Keeps one subscription to ``NS:prices`` alive and feeds the hub."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        stats: Stats,
        connect: Callable[[], aioredis.Redis],
        probe_after_s: float = 2.0,
        probe_timeout_s: float = 2.0,
        on_control: Callable[[], None] | None = None,
        publisher: aioredis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.stats = stats
        self.connect = connect
        self.probe_after_s = probe_after_s
        self.probe_timeout_s = probe_timeout_s
        self.on_control = on_control  # told of each watchlist change (``NS:control``)
        self.probe = None if publisher is None else DeliveryProbe(
            settings.keys.probe(uuid.uuid4().hex[:12]), publisher.publish)
        self.connected = False
        self._backoff = Backoff(initial_s=0.1, cap_s=2.0)
        self._malformed_log = LogThrottle(log, 10.0)
        self._flap_log = LogThrottle(log, 10.0)
        self._losses: collections.deque[float] = collections.deque()  # monotonic times
        self._worked = False
        self._seq_bound = 0  # NS:seq when last read: no real update has a larger seq
        self._client: aioredis.Redis | None = None

    async def run(self) -> None:
        """Subscribe, consume, and on any Redis failure resubscribe; runs until cancelled."""
        failed = False
        while True:
            self._worked = False
            try:
                await self._session(failed)
            except (RedisError, OSError) as e:  # StaleSubscription is a RedisError
                # News unless the subscription was already failing: a session that carried
                # ticks had recovered from any earlier loss.
                self._lost(e, news=self._worked or not failed)
                failed = True
            finally:
                self.connected = False
            await asyncio.sleep(self._backoff.next_delay())

    @property
    def flapping(self) -> int:
        """Losses of the subscription within `FLAP_WINDOW_S` with no session between them
        that carried a tick; `FLAP_LOSSES` or more means it keeps dropping (readiness
        reports it). 0 once a session has carried a tick."""
        now = time.monotonic()
        while self._losses and self._losses[0] < now - FLAP_WINDOW_S:
            self._losses.popleft()
        return len(self._losses) if len(self._losses) >= FLAP_LOSSES else 0

    def _lost(self, error: BaseException, news: bool) -> None:
        self._losses.append(time.monotonic())
        what = f"{type(error).__name__}: {error}"
        if news:
            log.warning("Redis subscription lost (%s); retrying", what)
        elif self.flapping:
            # One line per interval with the count, rather than one per loss (a Redis that
            # cuts the subscription on every tick: client-output-buffer-limit pubsub).
            self._flap_log.warning(
                "Redis subscription keeps dropping: lost %d times in the last %.0f s with no "
                "tick delivered (last: %s); clients get snapshots only. Check Redis's "
                "client-output-buffer-limit for pubsub", self.flapping, FLAP_WINDOW_S, what)

    async def _session(self, after_failure: bool) -> None:
        client = self.connect()
        keys = self.settings.keys
        channels = (keys.prices, keys.control) if self.on_control else (keys.prices,)
        control = keys.control.encode()
        arrived: list[bytes] = []  # tick messages read together, handed over as one
        # Subscribe first, then read the cache: nothing published in between is lost,
        # and the hub drops anything the snapshot already covers (by seq).
        events = subscription(client, channels, lambda: read_view(client, keys), poll_s=0.5,
                              probe_after_s=self.probe_after_s,
                              probe_timeout_s=self.probe_timeout_s, probe=self.probe)
        try:
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, Snapshot):
                        self._resynced(event.value)
                        if not self.connected:
                            self._opened(client, after_failure)
                    elif event.channel == control and self.on_control is not None:
                        self.on_control()
                    else:
                        self._delivered()
                        arrived.append(event.data)
                        if not event.more or len(arrived) >= MERGE_MAX:
                            await self.on_prices(arrived)
                            arrived = []
        finally:
            self._client = None
            await client.aclose()

    def _opened(self, client: aioredis.Redis, after_failure: bool) -> None:
        self._client = client
        self.connected = True
        if after_failure:
            self.stats.redis_reconnects += 1
            log.info("Redis subscription re-established; clients get a fresh snapshot")
        if self.on_control is not None:
            self.on_control()  # changes made while it was down

    def _resynced(self, view: StreamView) -> None:
        self.hub.resync(view.cache.items(), view.epoch, view.top)
        self._seq_bound = view.cache.last_seq or 0

    def _delivered(self) -> None:
        """A tick came through this session: the subscription works."""
        if not self._worked:
            self._worked = True
            self._backoff.reset()
            if len(self._losses) >= FLAP_LOSSES:
                log.info("Redis subscription delivers ticks again")
            self._losses.clear()

    async def on_prices(self, payloads: list[bytes]) -> None:
        """Tick messages that arrived together, in order: each decoded once (for every
        client), all checked in one round trip, then handed to the hub as ONE tick, the
        latest update per ticker. Several arrive together only when the gateway fell
        behind (a fan-out round longer than the tick interval): merging them here keeps
        its delay bounded by a round or two, where one round per message would fall
        further behind with each tick (docs/PERFORMANCE.md, "The direct path")."""
        decoded: list[dict[str, PriceUpdate]] = []
        for payload in payloads:
            try:
                updates = decode_map(payload)
            except CodecError as e:
                self._malformed(e)
                continue
            if updates:
                decoded.append(updates)
        if not decoded or (bound := await self._check()) is None:
            return
        merged: dict[str, PriceUpdate] = {}
        ticks = updates_in = 0
        for updates in decoded:
            top = max(u.seq for u in updates.values())
            if top > bound:
                # The producer takes seqs from NS:seq before it publishes them, so a larger
                # one is forged, and the hub (which drops ticks at or below the last
                # position) would otherwise show it and hide every real tick after it.
                self._malformed(CodecError(
                    f"seq {top} is beyond {self.settings.keys.seq} ({bound})"))
                continue
            merged.update(updates)
            ticks += 1
            updates_in += len(updates)
        if not merged:
            return
        tick = {t: EncodedUpdate(u.seq, encode_update(u)) for t, u in merged.items()}
        self.stats.newest_update_ts = max(u.timestamp for u in merged.values())
        self.stats.conflated += updates_in - len(merged)
        self.hub.publish(tick, max(u.seq for u in merged.values()), ticks)

    def _malformed(self, error: CodecError) -> None:
        self.stats.malformed += 1
        self._malformed_log.warning("skipping malformed message on prices channel: %s", error)

    async def _check(self) -> int | None:
        """Reads the epoch and ``NS:seq`` for ticks about to go out: None when they must
        not (the epoch changed: the hub was resynced instead), else the largest seq a
        producer has handed out."""
        client = self._client
        if client is None:
            return sys.maxsize  # outside a session (a test's feed): nothing to check against
        keys = self.settings.keys
        try:
            raw_epoch, raw_seq = await self._read_epoch_and_seq(client)
        except RedisConnectionError:
            # This connection sat idle and was closed (CLIENT KILL, Redis's idle timeout):
            # once more, on a fresh one, rather than tearing the live subscription down.
            raw_epoch, raw_seq = await self._read_epoch_and_seq(client)
        if raw_epoch is None:  # wiped under us: the next tick brings the new epoch
            return None
        epoch = epoch_text(raw_epoch)
        if self.hub.epoch == NO_EPOCH:  # the first tick of a fresh dataset: nothing to reset
            self.hub.epoch = epoch
        elif epoch != self.hub.epoch:
            log.warning("%s changed: Redis holds another dataset now; clients get a reset",
                        keys.epoch)
            self._resynced(await read_view(client, keys))
            return None
        self._seq_bound = max(self._seq_bound, int(raw_seq) if raw_seq and raw_seq.isdigit() else 0)
        return self._seq_bound

    async def _read_epoch_and_seq(self, client: aioredis.Redis) -> list[bytes | None]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(self.settings.keys.epoch)
            pipe.get(self.settings.keys.seq)
            result: list[bytes | None] = await pipe.execute()
        return result
