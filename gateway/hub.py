"""The in-process fan-out: one tick in, a conflated batch marked on every client.

The hub never queues: each client holds at most one pending batch (latest value per
ticker wins), so a slow reader costs bounded memory and never delays the others
(docs/PERFORMANCE.md, conflation); a client whose stream is parked with nothing pending
is written to at once instead (`Client.direct`). A `Changes` is framed once (by
`gateway.stream.framing`, which caches the bytes on it) and shared by every client that
gets exactly those changes after the same previous position; only a client that fell
behind (its pending changes merged two ticks) pays for a frame of its own. The hub knows
no transport: what it holds for bars and notices are frames built elsewhere, and a
client's direct writer is a function, opaque here. Positions are those
of README "Resume and continuity": an int on one server, a `Vector` of one per
partition on a Cluster (`gateway.positions`, docs/CLUSTER.md "The gateway on a Cluster").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from gateway.positions import Position, covered, join
from gateway.stats import Stats
from gateway.updates import EncodedUpdate
from gateway.waiting import Wakeup

log = logging.getLogger(__name__)

# The epoch of a dataset before its first tick (the producer's tick script creates the real
# one): no position can be resumed under it, and leaving it is no reset.
NO_EPOCH = "0" * 16


class Changes:
    """An immutable set of updates, the latest per ticker, that brings a client to log
    position ``pos``; and the frame the transport built for it (``wire``, for the
    ``(epoch, previous position)`` in ``wire_key``, and ``chunk``, the same in HTTP/1.1
    chunked framing, once asked for), shared by every client that sends it."""

    __slots__ = ("chunk", "items", "pos", "wire", "wire_key")

    def __init__(self, items: dict[str, EncodedUpdate], pos: Position) -> None:
        self.items = items
        self.pos = pos
        self.wire: bytes = b""
        self.chunk: bytes = b""
        self.wire_key: tuple[str, Position] | None = None


def no_direct(batch: Changes) -> bool:
    """`Client.direct` of a stream that cannot be written to by the hub."""
    return False


class Client:
    """One SSE stream's state in the hub: its filter, at most one pending batch, and the
    log position of the last event it was sent."""

    __slots__ = ("bar_frames", "bars", "closed", "direct", "entitled", "expired", "expiry",
                 "floor", "last_pos", "last_sent", "notice_kinds", "notices", "parked",
                 "pending", "pending_pos", "ping", "reset", "resync", "tickers", "wake",
                 "wanted")

    def __init__(self, tickers: frozenset[str] | None, bars: str | None = None,
                 notice_kinds: frozenset[str] | None = None) -> None:
        self.tickers = tickers
        self.bars = bars  # the bar interval this stream asked for (``?bars=``), or None
        self.bar_frames: list[bytes] = []  # `event: bar` frames not yet sent
        self.entitled: frozenset[str] | None = None  # the access token's tickers; None: all
        self.wanted = tickers  # what a delayed stream serves (its `tickers` is empty)
        self.notice_kinds = notice_kinds  # named events it asked for (`gateway.notices`)
        self.notices: dict[str, bytes] | None = None  # the latest frame of each, unsent
        self.pending: Changes | dict[str, EncodedUpdate] | None = None
        self.pending_pos: Position = 0
        self.resync: Changes | None = None  # a fresh snapshot that replaces anything pending
        self.reset = False  # the resync is of another epoch: send `event: reset` first
        self.floor: Position = 0  # ticks at or below this position are already covered
        self.last_pos: Position = 0
        self.closed = False
        self.expired = False  # closed because the client's access token expired
        self.expiry: asyncio.TimerHandle | None = None  # the timer that will expire it
        self.ping = False  # a keep-alive comment is due
        self.last_sent = 0.0  # loop time of the last frame sent
        self.wake = Wakeup()  # only the stream's task waits on it (gateway/waiting.py)
        # The direct path (gateway/stream/direct.py): while the stream's task is parked
        # with nothing to send, `direct(batch)` writes a batch to the socket at once, True
        # when it did; it may decline (a paused socket), and then the task sends it.
        self.direct: Callable[[Changes], bool] = no_direct
        self.parked = False

    def take_notices(self) -> list[bytes]:
        """The named-event frames due, oldest kind first; empty when none."""
        notices, self.notices = self.notices, None
        return list(notices.values()) if notices else []

    def take(self) -> Changes | None:
        """What to send now: a fresh snapshot if one is due, else the pending updates."""
        if self.resync is not None:
            batch, self.resync, self.pending = self.resync, None, None
            return batch
        pending, self.pending = self.pending, None
        if pending is None or isinstance(pending, Changes):
            return pending
        return Changes(pending, self.pending_pos)

    def take_bars(self) -> list[bytes]:
        """The bar frames to send now, oldest first."""
        frames = self.bar_frames
        if frames:
            self.bar_frames = []
        return frames

    def cover(self, pos: Position) -> None:
        """Everything up to log position ``pos`` reached the client by other means (a
        snapshot or a replay): drop it from what is pending, and never offer it again."""
        self.floor = join(self.floor, pos)
        self.last_pos = join(self.last_pos, pos)
        pending = self.pending
        if pending is None:
            return
        items = pending.items if isinstance(pending, Changes) else pending
        kept = {t: i for t, i in items.items() if i[0] > covered(pos, t)}
        self.pending = kept or None


class Hub:
    """Fans ticks out to registered clients; knows the epoch and the last tick's position."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.clients: set[Client] = set()
        self.latest: dict[str, EncodedUpdate] = {}
        self.epoch = ""
        self.pos: Position = 0  # log position of the last tick marked (or of the last snapshot)
        self.closing = False

    def register(self, tickers: frozenset[str] | None, bars: str | None = None,
                 notice_kinds: frozenset[str] | None = None) -> Client:
        """A new client; updates (and the notices it asked for) are marked on it from now on."""
        client = Client(tickers, bars, notice_kinds)
        if self.closing:  # a stream opened during shutdown ends at once
            client.closed = True
            client.wake.set()
        self.clients.add(client)
        return client

    def unregister(self, client: Client) -> None:
        """Forget ``client`` (idempotent), and its expiry timer."""
        self.clients.discard(client)
        if client.expiry is not None:
            client.expiry.cancel()
            client.expiry = None

    def publish(self, tick: Mapping[str, EncodedUpdate], pos: int, ticks: int = 1) -> None:
        """Mark the tick at log position ``pos`` (``ticks`` of the producer's, merged) on
        every client; a tick at or below the last position seen is already covered (by
        the snapshot read after subscribing)."""
        if not isinstance(self.pos, int) or pos <= self.pos or not tick:
            return
        self.pos = pos
        fresh = dict(tick)
        self.latest.update(fresh)
        self.stats.ticks += ticks
        whole = Changes(fresh, pos)
        by_filter: dict[frozenset[str], Changes | None] = {}
        conflated = 0
        for client in self.clients:
            tickers = client.tickers
            batch: Changes | None = whole
            if tickers is not None:
                batch = by_filter.get(tickers, whole)
                if batch is whole:
                    sub = {t: fresh[t] for t in tickers if t in fresh}
                    batch = by_filter[tickers] = Changes(sub, pos) if sub else None
            if batch is not None and pos > client.floor:  # type: ignore[operator]
                conflated += _offer(client, batch)
        self.stats.conflated += conflated

    def bar_wanted(self) -> dict[str, frozenset[str] | None]:
        """Per interval some stream asked for, the tickers wanted (None: every ticker)."""
        out: dict[str, frozenset[str] | None] = {}
        for client in self.clients:
            interval = client.bars
            if interval is None:
                continue
            if interval not in out:
                out[interval] = client.tickers
            else:
                have, more = out[interval], client.tickers
                out[interval] = None if have is None or more is None else have | more
        return out

    def publish_bars(self, interval: str, bars: Mapping[str, bytes],
                     encode: Callable[[str, Mapping[str, bytes]], bytes]) -> None:
        """Queue one bar frame, ``encode(interval, bars)`` with ``bars`` ({ticker: bar JSON
        with "partial"}) narrowed to its tickers, on every stream of ``interval``; a stream
        that has fallen `MAX_BAR_FRAMES` behind loses its oldest bar frames."""
        by_filter: dict[frozenset[str] | None, bytes | None] = {}
        for client in self.clients:
            if client.bars != interval:
                continue
            key = client.tickers
            if key not in by_filter:
                items = bars if key is None else {t: bars[t] for t in key if t in bars}
                by_filter[key] = encode(interval, items) if items else None
            frame = by_filter[key]
            if frame is None:
                continue
            frames = client.bar_frames
            frames.append(frame)
            if len(frames) > MAX_BAR_FRAMES:
                del frames[0]
                self.stats.conflated += 1
            client.wake.set()

    def resync(self, snapshot: dict[str, EncodedUpdate], epoch: str, pos: int) -> None:
        """Replace the hub's view after (re)subscribing. Under the same epoch, a catch-up
        of what changed (`_catch_up`); otherwise every client gets this snapshot next.
        Under another epoch it comes after `event: reset` and follows nothing; so it
        does when the log now ends before the last position sent (a Sentinel failover to a
        replica that had not received the last ticks: the resume rule's "ahead of the log",
        docs/REDIS.md "Sentinel"), since the snapshot may hold older updates than a client."""
        known = self.epoch not in ("", NO_EPOCH)
        reset = known and (epoch != self.epoch or join(pos, self.pos) != pos)
        old, self.latest = self.latest, dict(snapshot)
        self.epoch, self.pos = epoch, pos
        if known and not reset:
            self._catch_up(old, snapshot, pos)
            return
        by_filter: dict[frozenset[str] | None, Changes] = {}
        for client in self.clients:
            key = client.tickers
            if key not in by_filter:
                items = snapshot if key is None else {t: snapshot[t] for t in key if t in snapshot}
                by_filter[key] = Changes(dict(items), pos)
            if reset:
                client.reset = True
                client.last_pos = 0
            self._resync_one(client, by_filter[key], pos)

    def _catch_up(self, old: Mapping[str, EncodedUpdate], snapshot: Mapping[str, EncodedUpdate],
                  pos: int) -> None:
        """A resync of the same dataset: every client was marked each tick up to the hub's
        last position, so it gets only the updates newer than those, merged into what it
        has pending, as the default resume does (README "Resume and continuity": no
        duplicate). A client that never got its first snapshot (it opened while Redis was
        down) gets the whole one."""
        newer = {t: u for t, u in snapshot.items() if t not in old or u[0] > old[t][0]}
        whole = Changes(newer, pos)
        by_filter: dict[frozenset[str] | None, Changes] = {None: whole}
        for client in self.clients:
            key = client.tickers
            if not client.last_pos:
                items = snapshot if key is None else {t: snapshot[t] for t in key if t in snapshot}
                self._resync_one(client, Changes(dict(items), pos), pos)
                continue
            if key is not None and key not in by_filter:
                by_filter[key] = Changes({t: newer[t] for t in key if t in newer}, pos)
            batch = by_filter[key]
            if client.resync is not None:  # an earlier snapshot not sent yet: bring it up
                self._resync_one(client, Changes({**client.resync.items, **batch.items}, pos),
                                 pos)
            elif join(pos, client.floor) != client.floor and batch.items:
                self.stats.conflated += _offer(client, batch)
            client.floor = join(client.floor, pos)

    @staticmethod
    def _resync_one(client: Client, snapshot: Changes, pos: int) -> None:
        client.resync = snapshot
        client.floor = pos
        client.wake.set()

    def notify(self, kind: str, frame: bytes,
               narrow: Callable[[frozenset[str]], bytes] | None = None) -> None:
        """Mark a named event on every client that asked for ``kind`` (latest one wins);
        a client entitled to some tickers only gets ``narrow(entitled)`` when given."""
        narrowed: dict[frozenset[str], bytes] = {}
        for client in self.clients:
            kinds = client.notice_kinds
            if kinds is not None and kind in kinds:
                data = frame
                if narrow is not None and client.entitled is not None:
                    data = narrowed.get(client.entitled) or narrowed.setdefault(
                        client.entitled, narrow(client.entitled))
                if client.notices is None:
                    client.notices = {}
                client.notices[kind] = data
                client.wake.set()

    def ping_idle(self, sent_before: float) -> None:
        """Mark a ping due on every client that sent nothing since ``sent_before``."""
        for client in self.clients:
            if client.last_sent < sent_before and not client.ping:
                client.ping = True
                client.wake.set()

    def close(self) -> None:
        """Shutdown: wake every client so its stream ends now."""
        self.closing = True
        for client in self.clients:
            client.closed = True
            client.wake.set()


MAX_BAR_FRAMES = 8  # ~4 s of closes and forming bars: a slower stream loses the oldest


def _offer(client: Client, batch: Changes) -> int:
    """Deliver ``batch`` to ``client``: written at once when its stream is parked with
    nothing pending (`Client.direct`), else marked on it; the number of pending updates
    it overwrote."""
    if client.parked and not client.wake.is_set() and client.direct(batch):
        return 0
    pending = client.pending
    if pending is None:
        client.pending = batch  # shared, not copied: most clients send it as is
        client.pending_pos = batch.pos
        client.wake.set()
        return 0
    merged = dict(pending.items) if isinstance(pending, Changes) else pending
    before = len(merged)
    merged.update(batch.items)
    client.pending = merged
    client.pending_pos = batch.pos
    return before + len(batch.items) - len(merged)
