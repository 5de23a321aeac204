"""``GET /api/stream/prices``: the SSE stream (snapshot first, then conflated changes)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from gateway.cache import CacheView, read_cache
from gateway.hub import Batch, Client, Item
from gateway.state import Gateway
from gateway.stats import Stats
from gateway.throttle import LogThrottle
from shared.codec import encode_update
from shared.models import InvalidTicker, normalize_ticker

log = logging.getLogger(__name__)
_dropped_log = LogThrottle(log, 10.0)
router = APIRouter()

RETRY_FRAME = ServerSentEvent(retry=1000).encode()
_PING = ServerSentEvent(comment="ping")


class PriceStream(EventSourceResponse):
    """sse-starlette's response; a client dropped for a blocked send is counted, not raised."""

    def __init__(self, content: AsyncIterator[bytes], stats: Stats, **kwargs: object) -> None:
        super().__init__(
            content, ping_message_factory=lambda: _PING, **kwargs  # type: ignore[arg-type]
        )
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self.stats.dropped_slow += 1
            _dropped_log.warning("dropped a client whose socket stayed blocked past the timeout")


def parse_tickers(raw: str | None, limit: int) -> frozenset[str] | None:
    """The ``?tickers=`` filter, validated; None for no filter. Raises 422 naming the problem."""
    if raw is None:
        return None
    parts = [p for p in raw.split(",") if p.strip()]
    if not parts:
        raise HTTPException(422, "tickers: give at least one symbol, e.g. tickers=AAPL,MSFT")
    if len(parts) > limit:
        raise HTTPException(422, f"tickers: at most {limit} symbols per stream")
    try:
        return frozenset(normalize_ticker(p) for p in parts)
    except InvalidTicker as e:
        raise HTTPException(422, f"tickers: {e}") from e


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


async def _events(
    gw: Gateway, wanted: frozenset[str] | None, after: int | None
) -> AsyncIterator[bytes]:
    hub, stats = gw.hub, gw.stats
    client = hub.register(wanted)  # before the snapshot read: no tick can fall in between
    try:
        yield RETRY_FRAME
        view = await _snapshot_view(gw)
        client.drop_older({t: u.seq for t, u in view.updates.items()})
        first = first_batch(view, wanted, after)
        if first is not None:
            stats.events_sent += 1
            stats.updates_sent += len(first.items)
            yield first.frame()
        async for frame in _live(client, stats):
            yield frame
    finally:
        hub.unregister(client)


async def _live(client: Client, stats: Stats) -> AsyncIterator[bytes]:
    wake = client.wake
    while True:
        await wake.wait()
        wake.clear()
        if client.closed:
            return
        taken = client.take()
        if taken is None:
            continue
        batch = taken if isinstance(taken, Batch) else Batch(taken)
        stats.events_sent += 1
        stats.updates_sent += len(batch.items)
        yield batch.frame()


async def _snapshot_view(gw: Gateway) -> CacheView:
    """The cache from Redis; during an outage nothing (the snapshot after recovery follows)."""
    try:
        return await read_cache(gw.redis, gw.settings.keys)
    except (RedisError, OSError):
        return CacheView({}, None)


@router.get("/api/stream/prices", response_model=None)
async def stream_prices(
    request: Request,
    tickers: str | None = Query(None, description="comma-separated symbols"),
    last_event_id: str | None = Query(None, description="resume after this event id"),
) -> Response:
    """Server-Sent Events: a snapshot, then only what changed since the last event."""
    gw: Gateway = request.app.state.gateway
    wanted = parse_tickers(tickers, gw.settings.max_stream_tickers)
    if len(gw.hub.clients) >= gw.settings.max_clients:
        gw.stats.rejected_full += 1
        return JSONResponse(
            {"detail": "too many clients connected; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    after = parse_event_id(request.headers.get("last-event-id") or last_event_id)
    gw.stats.streams_opened += 1
    return PriceStream(
        _events(gw, wanted, after),
        gw.stats,
        ping=gw.settings.ping_interval_s,
        send_timeout=gw.settings.send_timeout_s,
    )
