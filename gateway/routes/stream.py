"""``GET /api/stream/prices``: the SSE stream (snapshot first, then conflated changes).

A raw ASGI endpoint rather than a FastAPI route: a stream lives for hours, and FastAPI's
request machinery (dependency exit stacks, exception wrappers) would stay alive with it,
several KB per connection against issue 3's 30 KB budget. Errors are still JSON bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.cache import CacheView, read_cache
from gateway.hub import Batch, Client, Item
from gateway.notices import parse_kinds
from gateway.sse import PING_FRAME, PriceStream
from gateway.state import Gateway
from shared.bars import INTERVALS
from shared.codec import encode_update
from shared.models import InvalidTicker, normalize_ticker

PATH = "/api/stream/prices"
RETRY_FRAME = ServerSentEvent(retry=1000).encode()


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


def parse_bars(raw: str | None) -> str | None:
    """The ``?bars=`` interval (``1s`` or ``1m``), or None for no bar events."""
    if raw is None:
        return None
    if raw not in INTERVALS:
        raise BadRequest(f"bars: expected one of {', '.join(INTERVALS)}")
    return raw


def parse_event_id(raw: str | None) -> int | None:
    """The resume point, or None when absent or unparsable (then: a full snapshot)."""
    if raw is None or not raw.strip().isdigit() or len(raw) > 20:
        return None
    return int(raw.strip())


def first_batch(view: CacheView, wanted: frozenset[str] | None, after: int | None) -> Batch | None:
    """The snapshot event: the requested tickers, only those newer than ``after`` on resume.

    An id ahead of ``NS:seq`` means Redis was reset (seqs restart): send everything.
    """
    if after is not None and (view.last_seq is None or after > view.last_seq):
        after = None
    items: dict[str, Item] = {
        t: (u.seq, encode_update(u))
        for t, u in view.updates.items()
        if (wanted is None or t in wanted) and (after is None or u.seq > after)
    }
    return Batch(items) if items else None


async def _events(gw: Gateway, client: Client, after: int | None) -> AsyncGenerator[bytes, None]:
    stats = gw.stats
    loop = asyncio.get_running_loop()
    yield RETRY_FRAME
    # The snapshot is built in a helper so none of it stays referenced from this frame,
    # which lives as long as the stream (it was 40 KB per connection with 10 tickers).
    snapshot = await _snapshot_frame(gw, client, after)
    if snapshot:
        yield snapshot
    del snapshot
    if client.notice_kinds is not None:  # what it asked for, as it is now
        for kind in sorted(client.notice_kinds):
            if kind in gw.notices.frames:
                yield gw.notices.frames[kind]
    client.last_sent = loop.time()
    wake = client.wake
    while True:  # the hot loop: one pass per event per client
        await wake.wait()
        wake.clear()
        if client.closed:
            return
        if client.notices is not None:
            for notice in client.take_notices():
                yield notice
        taken = client.take()
        bar_frames = client.take_bars() if client.bar_frames else None
        client.last_sent = loop.time()
        if taken is None:
            if bar_frames:
                client.ping = False
                for frame in bar_frames:
                    yield frame
            elif client.ping:
                client.ping = False
                yield PING_FRAME
            continue
        client.ping = False
        batch = taken if isinstance(taken, Batch) else Batch(taken)
        stats.events_sent += 1
        stats.updates_sent += len(batch.items)
        yield batch.frame()
        if bar_frames:
            for frame in bar_frames:
                yield frame


async def _snapshot_frame(gw: Gateway, client: Client, after: int | None) -> bytes:
    """The first event's frame (empty when there is nothing to send)."""
    view = await _snapshot_view(gw)
    client.drop_older({t: u.seq for t, u in view.updates.items()})
    first = first_batch(view, client.tickers, after)
    if first is None:
        return b""
    gw.stats.events_sent += 1
    gw.stats.updates_sent += len(first.items)
    return first.frame()


async def _snapshot_view(gw: Gateway) -> CacheView:
    """The cache from Redis; during an outage nothing (the snapshot after recovery follows)."""
    try:
        return await read_cache(gw.redis, gw.settings.keys)
    except (RedisError, OSError):
        return CacheView({}, None)


def respond(request: Request) -> Response:
    """Validate the request; the stream, or a JSON error."""
    gw: Gateway = request.app.state.gateway
    try:
        wanted = parse_tickers(request.query_params.get("tickers"), gw.settings.max_stream_tickers)
        bars = parse_bars(request.query_params.get("bars"))
        kinds = parse_kinds(request.query_params.get("events"))
    except (BadRequest, ValueError) as e:
        return JSONResponse({"detail": str(e)}, status_code=422)
    if len(gw.hub.clients) >= gw.settings.max_clients:
        gw.stats.rejected_full += 1
        return JSONResponse(
            {"detail": "too many clients connected; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    raw_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    after = parse_event_id(raw_id)
    # Registered before the snapshot read: no tick can fall in between.
    client = gw.hub.register(wanted, bars, kinds)
    gw.stats.streams_opened += 1
    return PriceStream(_events(gw, client, after), gw.hub, client, gw.stats, gw.watchdog)


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
