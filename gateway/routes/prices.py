"""``GET /api/prices`` and ``GET /api/prices/{ticker}``: reads of the Redis cache."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from gateway.access import ReadGrant, Refused
from gateway.cache import read_cache, read_one
from gateway.hub import encode_items
from gateway.state import Gateway
from shared.models import InvalidTicker, normalize_ticker

router = APIRouter()


def json_response(body: bytes, status_code: int = 200) -> Response:
    """Already-encoded JSON bytes as a response."""
    return Response(body, status_code=status_code, media_type="application/json")


@router.get("/api/prices", response_model=None)
async def all_prices(request: Request, grant: ReadGrant) -> Response:
    """Snapshot ``{TICKER: PriceUpdate}`` of every cached ticker the token may see."""
    gw: Gateway = request.app.state.gateway
    view = await read_cache(gw.redis, gw.settings.keys)
    items = view.items()
    if grant.tickers is not None:
        items = {t: i for t, i in items.items() if t in grant.tickers}
    return json_response(encode_items(items))


@router.get("/api/prices/{ticker}", response_model=None)
async def one_price(ticker: str, request: Request, grant: ReadGrant) -> Response:
    """The cached PriceUpdate of one ticker; 404 when there is none, 403 when the token
    does not cover it."""
    gw: Gateway = request.app.state.gateway
    try:
        symbol = normalize_ticker(ticker)
    except InvalidTicker as e:
        raise HTTPException(422, f"ticker: {e}") from e
    if not grant.allows(symbol):
        raise Refused(403, f"the token does not cover {symbol}", error="insufficient_scope")
    update = await read_one(gw.redis, gw.settings.keys, symbol)
    if update is None:
        raise HTTPException(404, f"no price for ticker {symbol}")
    return json_response(orjson.dumps(update.to_dict()))
