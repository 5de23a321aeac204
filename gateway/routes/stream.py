"""``GET /api/stream/prices``: the SSE stream (snapshot first, then conflated changes).

A raw ASGI endpoint rather than a FastAPI route: a stream lives for hours, and FastAPI's
request machinery (dependency exit stacks, exception wrappers) would stay alive with it,
several KB per connection against a 30 KB budget (docs/PERFORMANCE.md). Errors are still
JSON bodies.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.access import Grant, Refused, read_grant, seconds_left
from gateway.cache import StreamView, read_view
from gateway.delayed import DelayedLog, state_at
from gateway.deps import Gateway, gateway_of
from gateway.headers import SECURITY_HEADERS
from gateway.hub import RESET_FRAME, Batch, Client, Item, encode_items
from gateway.notices import parse_kinds
from gateway.resume import EventId, changed_since, parse_event_id, replay, resumable
from gateway.sse import PING_FRAME, PriceStream
from shared.bars import INTERVALS
from shared.models import InvalidTicker, normalize_ticker

PATH = "/api/stream/prices"
DELAYED_PERIOD_S = 0.25  # how often a delayed stream releases what has become old enough
RETRY_FRAME = ServerSentEvent(retry=1000).encode()
EXPIRED_FRAME = ServerSentEvent(
    event="expired", data='{"detail": "the access token expired; reconnect with a new one"}'
).encode()


class BadRequest(Exception):
    """A query parameter is invalid; the message names it."""


def parse_tickers(raw: str | None, limit: int) -> frozenset[str] | None:
    """The ``?tickers=`` filter, validated; None for no filter."""
    if raw is None:
        return None
    parts = [p for p in raw.split(",") if p.strip()]
    if not parts:
        raise BadRequest("tickers: give at least one symbol, e.g. tickers=AAPL,MSFT")
    if len(parts) > limit:
        raise BadRequest(f"tickers: at most {limit} symbols per stream")
    try:
        return frozenset(normalize_ticker(p) for p in parts)
    except InvalidTicker as e:
        raise BadRequest(f"tickers: {e}") from e


def parse_max_hz(raw: str | None, *ceilings: float | None) -> float | None:
    """The client's ``?max_hz=``, capped by the token's claim and ``PRICEFEED_MAX_HZ``."""
    wanted: float | None = None
    if raw is not None:
        try:
            wanted = float(raw)
        except ValueError:
            wanted = math.nan
        if not (math.isfinite(wanted) and 0.1 <= wanted <= 1000):
            raise BadRequest("max_hz: give events per second between 0.1 and 1000")
    caps = [c for c in (wanted, *ceilings) if c is not None]
    return min(caps) if caps else None


def parse_bars(raw: str | None) -> str | None:
    """The ``?bars=`` interval (``1s`` or ``1m``), or None for no bar events."""
    if raw is None:
        return None
    if raw not in INTERVALS:
        raise BadRequest(f"bars: expected one of {', '.join(INTERVALS)}")
    return raw


@dataclass(frozen=True, slots=True)
class Opening:
    """How a stream starts: from scratch, from a resume point, or with a reset."""

    last: EventId | None  # the client's resume point, when it gave a usable one
    reset: bool  # it gave an id that cannot be resumed (or parsed)
    replay_all: bool


def _events(
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
    if client.closed:  # a replay cut short, or the token expired during it
        if client.expired:
            yield EXPIRED_FRAME
        return
    if client.notice_kinds is not None:  # what it asked for, as it is now
        for kind in sorted(client.notice_kinds):
            notice = gw.notices.frame_for(kind, client.entitled)
            if notice is not None:
                yield notice
    client.last_sent = loop.time()
    wake = client.wake
    while True:  # the hot loop: one pass per event per client
        await wake.wait()
        wake.clear()
        if interval:  # capped: wait out the interval while the hub keeps merging
            await _hold(client, client.last_sent + interval)
        if client.closed:
            if client.expired:
                yield EXPIRED_FRAME
            return
        if client.notices is not None:
            for notice in client.take_notices():
                yield notice
        batch = client.take()
        bar_frames = client.take_bars() if client.bar_frames else None
        client.last_sent = loop.time()
        if batch is None:
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
        stats.updates_sent += len(batch.items)
        frame = batch.frame(hub.epoch, client.last_pos)
        client.last_pos = batch.pos
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
    try:
        cutoff_ms = int(time.time() * 1000 - grant.delay_s * 1000)
        state, position = await state_at(gw.redis, gw.settings.keys, cutoff_ms, client.wanted)
    except (RedisError, OSError):
        state, position = {}, None
    if state:
        yield delayed_frame(state, grant.delay_s)
    yield from_notices(gw, client)
    reader = DelayedLog(gw.redis, gw.settings.keys, client.wanted, grant.delay_s,
                        position or 0)
    client.last_sent = loop.time()
    while True:
        await _hold(client, loop.time() + period)  # woken early only to end, ping or notify
        if client.closed:
            if client.expired:
                yield EXPIRED_FRAME
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


def delayed_frame(items: dict[str, Item], delay_s: float) -> bytes:
    """``event: delayed`` (so no client takes it for live data), ``data`` as a price event,
    ``id`` the last seq it holds."""
    seq = max(s for s, _ in items.values())
    return ServerSentEvent(data=encode_items(items).decode(), event="delayed",
                           id=str(seq), comment=f"delayed {delay_s:g} s").encode()


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
        return  # Redis is down: the hub's snapshot after recovery comes next
    last = opening.last
    resume = last is not None and resumable(view, last, opening.replay_all)
    if opening.reset or (last is not None and not resume):
        gw.stats.resets += 1
        yield RESET_FRAME
        last = None
    if last is None or not opening.replay_all:
        after = last.pos if last is not None else 0
        client.cover(view.top)  # before the first await below: no tick can slip between
        client.last_pos = after  # nothing to send (nothing wanted changed): still true
        first = changed_since(view, client.tickers, after)
        if after == 0 or first.items:
            yield _sent(gw, client, view.epoch, first)
        return
    client.last_pos = last.pos
    batches = replay(gw.redis, gw.settings.keys, client, last.pos, len(view.updates))
    try:
        async with aclosing(batches):
            async for batch in batches:
                yield _sent(gw, client, view.epoch, batch)
                gw.stats.replayed += len(batch.items)
    except (RedisError, OSError):
        # Ending the stream is the honest answer: the client resumes from its last id
        # (EventSource does so by itself); going on live would leave a gap.
        client.closed = True
        return
    client.cover(client.last_pos)


def _sent(gw: Gateway, client: Client, epoch: str, batch: Batch) -> bytes:
    gw.stats.events_sent += 1
    gw.stats.updates_sent += len(batch.items)
    frame = batch.frame(epoch, client.last_pos)
    client.last_pos = batch.pos
    return frame


async def _stream_view(gw: Gateway) -> StreamView | None:
    """The cache and the log's span from Redis; None during an outage."""
    try:
        return await read_view(gw.redis, gw.settings.keys)
    except (RedisError, OSError):
        return None


def parse_replay(raw: str | None) -> bool:
    """``?replay=all`` asks for every missed tick; absent, the default (latest values)."""
    if raw is None:
        return False
    if raw != "all":
        raise BadRequest("replay: the only value is 'all' (every missed tick, in order)")
    return True


def respond(request: Request) -> Response:
    """Validate the request; the stream, or a JSON error."""
    gw = gateway_of(request)
    try:
        grant = read_grant(request, gw.settings, gw.verifier)
        asked = parse_tickers(request.query_params.get("tickers"), gw.settings.max_stream_tickers)
        bars = parse_bars(request.query_params.get("bars"))
        kinds = parse_kinds(request.query_params.get("events"))
        replay_all = parse_replay(request.query_params.get("replay"))
        max_hz = parse_max_hz(request.query_params.get("max_hz"), grant.max_hz,
                              gw.settings.max_hz)
    except Refused as e:
        return _secured(e.response())
    except (BadRequest, ValueError) as e:
        return _secured(JSONResponse({"detail": str(e)}, status_code=422))
    wanted = grant.narrow(asked)
    if wanted is not None and not wanted:
        return _secured(Refused(403, "the token covers none of the requested tickers",
                                error="insufficient_scope").response())
    if len(gw.hub.clients) >= gw.settings.max_clients:
        gw.stats.rejected_full += 1
        return _secured(JSONResponse(
            {"detail": "too many clients connected; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        ))
    raw_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    last = parse_event_id(raw_id)
    opening = Opening(last, reset=raw_id is not None and last is None, replay_all=replay_all)
    # Registered before the snapshot read: no tick can fall in between. A delayed client
    # is registered for no live price and no bar (both are real time): only notices.
    if grant.delay_s:
        client = gw.hub.register(frozenset(), None, kinds)
        client.wanted = wanted
    else:
        client = gw.hub.register(wanted, bars, kinds)
    client.entitled = grant.tickers
    gw.stats.streams_opened += 1
    events = _events(gw, client, opening, grant, max_hz)
    return _secured(PriceStream(events, gw.hub, client, gw.stats, gw.watchdog))


def _secured(response: Response) -> Response:
    """``response`` with the security headers every other route gets from middleware."""
    response.raw_headers.extend(SECURITY_HEADERS)
    return response


class StreamEndpoint:
    """Server-Sent Events: a snapshot, then only what changed since the last event.

    A class instance, not a function: Starlette then calls it as a bare ASGI app.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = respond(Request(scope, receive))
        await response(scope, receive, send)


route = Route(PATH, StreamEndpoint(), methods=["GET", "HEAD"], include_in_schema=False)


class StreamFastPath:
    """Middleware sending stream requests straight to the endpoint.

    Every event resumes the whole coroutine chain of its request; skipping the exception
    middleware, exit stacks and router (six frames and a send wrapper) saves about 15 % of
    the per-event CPU (cProfile, 1,000 clients x 10 Hz). Other methods on the path fall
    through to the router (405).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.endpoint = StreamEndpoint()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] in _METHODS:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


_METHODS = frozenset({"GET", "HEAD"})
