"""The watchlist: ``NS:watchlist`` plus a control message so the producer follows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from gateway.access import ReadGrant, WriteGrant, writer
from gateway.cache import read_one
from gateway.state import Gateway
from shared.codec import decode_update, encode_control
from shared.errors import CodecError
from shared.models import InvalidTicker, normalize_ticker

router = APIRouter()


class AddTicker(BaseModel):
    """Body of ``POST /api/watchlist``."""

    model_config = ConfigDict(extra="forbid")
    ticker: str


def _symbol(raw: str, status_code: int) -> str:
    try:
        return normalize_ticker(raw)
    except InvalidTicker as e:
        raise HTTPException(status_code, str(e)) from e


def _price(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    try:
        return decode_update(raw).price
    except CodecError:
        return None


@router.get("/api/watchlist")
async def list_watchlist(request: Request, grant: ReadGrant) -> list[dict[str, Any]]:
    """Every watched ticker the token may see (sorted) with its cached price, or null
    before its first tick."""
    gw: Gateway = request.app.state.gateway
    keys = gw.settings.keys
    raw_members = await gw.redis.smembers(keys.watchlist)
    members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw_members)
    members = [t for t in members if grant.allows(t)]
    prices: list[bytes | str | None] = await gw.redis.hmget(keys.latest, members) if members else []
    return [{"ticker": t, "price": _price(raw)} for t, raw in zip(members, prices, strict=True)]


@router.post("/api/watchlist", status_code=201)
async def add_ticker(
    body: AddTicker, request: Request, grant: WriteGrant
) -> dict[str, Any]:
    """Add a ticker (adding twice is fine); the producer starts producing it."""
    gw: Gateway = request.app.state.gateway
    keys = gw.settings.keys
    symbol = _symbol(body.ticker, 422)
    if not await gw.redis.sismember(keys.watchlist, symbol):
        if await gw.redis.scard(keys.watchlist) >= gw.settings.max_watchlist:
            raise HTTPException(
                422, f"watchlist is full: at most {gw.settings.max_watchlist} tickers"
            )
        if await gw.redis.sadd(keys.watchlist, symbol):
            await gw.redis.publish(keys.control, encode_control("add", symbol))
    update = await read_one(gw.redis, keys, symbol) if grant.allows(symbol) else None
    return {"ticker": symbol, "price": None if update is None else update.price}


@router.delete("/api/watchlist/{ticker}", status_code=204, dependencies=[Depends(writer)])
async def remove_ticker(ticker: str, request: Request) -> Response:
    """Remove a ticker; 404 when it is not on the watchlist."""
    gw: Gateway = request.app.state.gateway
    keys = gw.settings.keys
    symbol = _symbol(ticker, 404)
    if not await gw.redis.srem(keys.watchlist, symbol):
        raise HTTPException(404, f"ticker {symbol} is not on the watchlist")
    await gw.redis.publish(keys.control, encode_control("remove", symbol))
    return Response(status_code=204)
