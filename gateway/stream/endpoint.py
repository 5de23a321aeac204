"""``GET /api/stream/prices``: the endpoint that answers a stream request.

A raw ASGI endpoint rather than a FastAPI route: a stream lives for hours, and FastAPI's
request machinery (dependency exit stacks, exception wrappers) would stay alive with it,
several KB per connection against a 30 KB budget (docs/PERFORMANCE.md). Errors are still
JSON bodies, with the security headers every other route gets from middleware.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.access import Refused, read_grant
from gateway.deps import gateway_of
from gateway.headers import SECURITY_HEADERS
from gateway.stream.events import stream_events
from gateway.stream.request import (
    BadRequest,
    opening_of,
    parse_bars,
    parse_kinds,
    parse_max_hz,
    parse_replay,
    parse_tickers,
)
from gateway.stream.response import PriceStream

PATH = "/api/stream/prices"


def respond(request: Request) -> PriceStream | Response:
    """Validate the request; the stream, or a JSON error."""
    gw = gateway_of(request)
    query = request.query_params
    try:
        grant = read_grant(request, gw.settings, gw.verifier)
        asked = parse_tickers(query.get("tickers"), gw.settings.max_stream_tickers)
        bars = parse_bars(query.get("bars"))
        kinds = parse_kinds(query.get("events"))
        replay_all = parse_replay(query.get("replay"))
        max_hz = parse_max_hz(query.get("max_hz"), grant.max_hz, gw.settings.max_hz)
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
    opening = opening_of(request.headers.get("last-event-id") or query.get("last_event_id"),
                         replay_all, gw.settings.partitions)
    # Registered before the snapshot read: no tick can fall in between. A delayed client
    # is registered for no live price and no bar (both are real time): only notices.
    if grant.delay_s:
        client = gw.hub.register(frozenset(), None, kinds)
        client.wanted = wanted
    else:
        client = gw.hub.register(wanted, bars, kinds)
    client.entitled = grant.tickers
    gw.stats.streams_opened += 1
    events = stream_events(gw, client, opening, grant, max_hz)
    return PriceStream(events, gw.hub, client, gw.stats, gw.watchdog)


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


# The methods a stream answers; others on its path get the router's 405.
METHODS = frozenset({"GET", "HEAD"})
