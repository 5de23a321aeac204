"""What one stream sends, in order: ``retry``, the opening, then the hub's mailbox.

The opening is a snapshot, what the client missed (`gateway.stream.resume`), or a reset
and a snapshot. After it, each pass of `_frames` sends whatever the hub marked on the
client: notices, the pending prices (one frame, shared with every client that gets the
same), bar frames, or a ping. The generator returns when the client is closed (it left,
its send got stuck, its token expired, the gateway stops, or a replay failed); the
response then sends the farewell, if any (`gateway.stream.response`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from redis.exceptions import RedisError

from gateway.access import Grant, seconds_left
from gateway.cluster import resume as cluster_resume
from gateway.cluster.delayed import ClusterDelayedLog, cluster_state_at
from gateway.cluster.hub import ClusterHub
from gateway.cluster.reads import ClusterView
from gateway.delayed import DelayedLog, state_at
from gateway.deps import Gateway
from gateway.hub import Changes, Client, no_direct
from gateway.positions import Position, Vector, join
from gateway.reads import StreamView, read_view
from gateway.stream.framing import (
    PING_FRAME,
    RESET_FRAME,
    RETRY_FRAME,
    delayed_frame,
    price_frame,
)
from gateway.stream.request import EventId, Opening
from gateway.stream.resume import changed_since, replay, resumable
from gateway.updates import EncodedUpdate

DELAYED_PERIOD_S = 0.25  # how often a delayed stream releases what has become old enough


def stream_events(
    gw: Gateway, client: Client, opening: Opening, grant: Grant, max_hz: float | None
) -> AsyncGenerator[bytes, None]:
    """The stream's frames. The token's expiry is one timer per stream (cancelled when the
    hub forgets the client): nothing about the token is checked per event."""
    left = seconds_left(grant)
    if left is not None:
        client.expiry = asyncio.get_running_loop().call_later(max(left, 0.0), _expire, client)
    if grant.delay_s:
        return _delayed_frames(gw, client, grant, max_hz)
    return _frames(gw, client, opening, max_hz)


def _expire(client: Client) -> None:
    client.expired = client.closed = True
    client.wake.set()


async def _frames(
    gw: Gateway, client: Client, opening: Opening, max_hz: float | None
) -> AsyncGenerator[bytes, None]:
    stats = gw.stats
    hub = gw.hub
    loop = asyncio.get_running_loop()
    interval = 0.0 if max_hz is None else 1.0 / max_hz
    yield RETRY_FRAME
    # The opening is built in a helper generator so none of it stays referenced from this
    # frame, which lives as long as the stream (it was 40 KB per connection with 10 tickers).
    async with aclosing(_opening(gw, client, opening)) as frames:
        async for frame in frames:
            yield frame
            del frame  # a stream's snapshot is its own: an idle stream must not keep it
    if client.closed:  # a replay cut short, or the token expired during it
        return
    if client.notice_kinds is not None:  # what it asked for, as it is now
        for kind in sorted(client.notice_kinds):
            notice = gw.notices.frame_for(kind, client.entitled)
            if notice is not None:
                yield notice
    client.last_sent = loop.time()
    wake = client.wake
    # Parked in the wait below with nothing pending, the hub writes live events for us
    # (gateway/stream/direct.py); a capped stream holds each event back, so never parks.
    parks = not interval and client.direct is not no_direct
    while True:  # the hot loop: one pass per event per client that the hub did not write
        client.parked = parks
        await wake.wait()
        client.parked = False
        wake.clear()
        if interval:  # capped: wait out the interval while the hub keeps merging
            await _hold(client, client.last_sent + interval)
        if client.closed:
            return
        if client.notices is not None:
            for notice in client.take_notices():
                yield notice
        changes = client.take()
        bar_frames = client.take_bars() if client.bar_frames else None
        client.last_sent = loop.time()
        if changes is None:
            if bar_frames:
                client.ping = False
                for frame in bar_frames:
                    yield frame
            elif client.ping:
                client.ping = False
                yield PING_FRAME
            continue
        client.ping = False
        if client.reset:
            client.reset = False
            yield RESET_FRAME
        stats.events_sent += 1
        stats.updates_sent += len(changes.items)
        if isinstance(changes.pos, Vector):
            changes = _not_behind(changes, client.last_pos)
        frame = price_frame(changes, hub.epoch, client.last_pos)
        client.last_pos = changes.pos
        yield frame
        if bar_frames:
            for frame in bar_frames:
                yield frame


async def _delayed_frames(
    gw: Gateway, client: Client, grant: Grant, max_hz: float | None
) -> AsyncGenerator[bytes, None]:
    """A delayed entitlement's stream (docs/ACCESS.md): ``event: delayed`` frames of the
    prices as they were ``delay_s`` ago, from the tick log; never a live price."""
    loop = asyncio.get_running_loop()
    period = max(DELAYED_PERIOD_S, 0.0 if max_hz is None else 1.0 / max_hz)
    yield RETRY_FRAME
    state, reader = await _delayed_opening(gw, client, grant)
    if state:
        yield delayed_frame(state, grant.delay_s)
    yield from_notices(gw, client)
    client.last_sent = loop.time()
    while True:
        await _hold(client, loop.time() + period)  # woken early only to end, ping or notify
        if client.closed:
            return
        if client.notices is not None:
            for notice in client.take_notices():
                yield notice
        try:
            due = await reader.release(int(time.time() * 1000))
        except (RedisError, OSError):
            due = {}
        if due:
            client.last_sent = loop.time()
            client.ping = False
            gw.stats.events_sent += 1
            gw.stats.updates_sent += len(due)
            yield delayed_frame(due, grant.delay_s)
        elif client.ping:
            client.ping = False
            client.last_sent = loop.time()
            yield PING_FRAME


async def _delayed_opening(gw: Gateway, client: Client, grant: Grant
                           ) -> tuple[dict[str, EncodedUpdate], DelayedLog | ClusterDelayedLog]:
    """The state as of the delay, and the reader that releases what comes after it."""
    cutoff_ms = int(time.time() * 1000 - grant.delay_s * 1000)
    if gw.cluster is not None:
        positions: list[int | None] = [None] * gw.settings.partitions
        try:
            state, positions = await cluster_state_at(gw.cluster, cutoff_ms, client.wanted)
        except (RedisError, OSError):
            state = {}
        return state, ClusterDelayedLog(gw.cluster, client.wanted, grant.delay_s, positions)
    try:
        state, position = await state_at(gw.redis, gw.settings.keys, cutoff_ms, client.wanted)
    except (RedisError, OSError):
        state, position = {}, None
    return state, DelayedLog(gw.redis, gw.settings.keys, client.wanted, grant.delay_s,
                             position or 0)


def from_notices(gw: Gateway, client: Client) -> bytes:
    """The notices the client asked for, as they are now, in one chunk."""
    if client.notice_kinds is None:
        return b""
    frames = (gw.notices.frame_for(kind, client.entitled) for kind in sorted(client.notice_kinds))
    return b"".join(f for f in frames if f is not None)


async def _hold(client: Client, until: float) -> None:
    """Wait until loop time ``until`` or until the client closes, whichever is first."""
    loop = asyncio.get_running_loop()
    while not client.closed and (remaining := until - loop.time()) > 0:
        client.wake.clear()  # the caller takes whatever is pending after this
        try:
            async with asyncio.timeout(remaining):
                await client.wake.wait()
        except TimeoutError:
            return


async def _opening(
    gw: Gateway, client: Client, opening: Opening
) -> AsyncGenerator[bytes, None]:
    """The first events: a snapshot, what the client missed, or a reset and a snapshot."""
    view = await _stream_view(gw)
    if view is None:
        if isinstance(gw.hub, ClusterHub):
            for frame in _from_hub(gw, gw.hub, client, opening):
                yield frame
        return  # Redis is down: the hub's snapshot after recovery comes next
    last = opening.last
    if isinstance(view, ClusterView):
        resume = last is not None and cluster_resume.resumable(view, last, opening.replay_all)
    else:
        resume = last is not None and resumable(view, last, opening.replay_all)
    if opening.reset or (last is not None and not resume):
        gw.stats.resets += 1
        yield RESET_FRAME
        last = None
    if last is None or not opening.replay_all:
        after: Position = last.pos if last is not None else 0
        client.cover(view.top)  # before the first await below: no tick can slip between
        client.last_pos = after  # nothing to send (nothing wanted changed): still true
        first = changed_since(view.updates, view.top, client.tickers, after)
        if after == 0 or first.items:
            yield _sent(gw, client, view.epoch, first)
        return
    client.last_pos = last.pos
    batches = _replay(gw, client, last, view)
    try:
        async with aclosing(batches):
            async for changes in batches:
                yield _sent(gw, client, view.epoch, changes)
                gw.stats.replayed += len(changes.items)
    except (RedisError, OSError):
        # Ending the stream is the honest answer: the client resumes from its last id
        # (EventSource does so by itself); going on live would leave a gap.
        client.closed = True
        return
    client.cover(client.last_pos)


def _not_behind(changes: Changes, last: Position) -> Changes:
    """``changes`` at a position no component of which is behind the client's last one.
    On a Cluster the hub's position lags a partition that a stream's opening read further
    (the partitions are read one by one): the client has those ticks, and its ids must
    never go back (docs/CLUSTER.md "The gateway on a Cluster")."""
    pos = join(changes.pos, last)
    return changes if pos == changes.pos else Changes(changes.items, pos)


def _sent(gw: Gateway, client: Client, epoch: str, changes: Changes) -> bytes:
    gw.stats.events_sent += 1
    gw.stats.updates_sent += len(changes.items)
    frame = price_frame(changes, epoch, client.last_pos)
    client.last_pos = changes.pos
    return frame


def _from_hub(gw: Gateway, hub: ClusterHub, client: Client, opening: Opening) -> list[bytes]:
    """A Cluster node that cannot be read (a failover under way) must not leave a new
    stream with the other partitions' ticks and no snapshot: the hub's own state is one,
    consistent at its position (docs/CLUSTER.md "The gateway on a Cluster"). A resume
    point cannot be checked without the logs: it gets a reset."""
    if not hub.latest:
        return []
    frames = []
    if opening.last is not None or opening.reset:
        gw.stats.resets += 1
        frames.append(RESET_FRAME)
    client.cover(hub.pos)
    client.last_pos = 0
    wanted = client.tickers
    items = hub.latest if wanted is None else {t: u for t, u in hub.latest.items() if t in wanted}
    frames.append(_sent(gw, client, hub.epoch, Changes(dict(items), hub.pos)))
    return frames


def _replay(gw: Gateway, client: Client, last: EventId,
            view: StreamView | ClusterView) -> AsyncGenerator[Changes, None]:
    if isinstance(view, ClusterView):
        assert gw.cluster is not None and isinstance(last.pos, Vector)
        return cluster_resume.replay(gw.cluster, client, last.pos, view.top)
    assert isinstance(last.pos, int)
    return replay(gw.redis, gw.settings.keys, client, last.pos, len(view.updates))


async def _stream_view(gw: Gateway) -> StreamView | ClusterView | None:
    """The cache and the log's span from Redis; None during an outage."""
    try:
        if gw.cluster is not None:
            return await gw.cluster.opening_views.read()
        return await read_view(gw.redis, gw.settings.keys)
    except (RedisError, OSError):
        return None
