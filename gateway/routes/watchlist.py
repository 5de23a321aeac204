"""The watchlist: ``NS:watchlist`` plus a control message so the producer follows.

An add is one script (`ADD_TICKER`): the membership check, the cap, the SADD and the
control message in one atomic step, so the cap holds across any number of gateways (as
three round trips, 100 concurrent adds under a cap of 20 left 42 members).

Members that are not valid symbols can only come from writing Redis directly; they are
left out of the list, and DELETE removes them by their exact text.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from gateway.access import ReadGrant, WriteGrant, writer
from gateway.delayed import state_at
from gateway.deps import GatewayDep
from shared.codec import decode_update, encode_control
from shared.errors import CodecError
from shared.models import InvalidTicker, is_valid_ticker, normalize_ticker
from shared.redisio import read_latest, read_latest_one

router = APIRouter()

# KEYS: watchlist. ARGV: ticker, cap, control channel, control message (the channel is
# no key: the gateway's ACL user may write only the watchlist, docs/REDIS.md).
# 1 added, 0 already there, -1 the watchlist is full.
ADD_TICKER = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
RAW_MEMBER_MAX = 256  # longest raw text DELETE tries to remove as a member


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
async def list_watchlist(gw: GatewayDep, grant: ReadGrant) -> list[dict[str, Any]]:
    """Every watched ticker the token may see (sorted) with its cached price, or null
    before its first tick."""
    keys = gw.settings.keys
    raw_members = await gw.redis.smembers(keys.watchlist)
    texts = (m.decode(errors="replace") if isinstance(m, bytes) else str(m) for m in raw_members)
    members = sorted(t for t in texts if is_valid_ticker(t) and grant.allows(t))
    if grant.delay_s:
        cutoff = int((time.time() - grant.delay_s) * 1000)
        delayed, _ = await state_at(gw.redis, keys, cutoff, frozenset(members))
        return [{"ticker": t, "price": _price(delayed[t][1] if t in delayed else None)}
                for t in members]
    cached = await read_latest(gw.redis, keys, members)
    return [{"ticker": t, "price": cached[t].price if t in cached else None} for t in members]


@router.post("/api/watchlist", status_code=201)
async def add_ticker(
    body: AddTicker, gw: GatewayDep, grant: WriteGrant
) -> dict[str, Any]:
    """Add a ticker (adding twice is fine); the producer starts producing it."""
    keys = gw.settings.keys
    symbol = _symbol(body.ticker, 422)
    cap = gw.settings.max_watchlist
    add = gw.redis.register_script(ADD_TICKER)
    added = await add(keys=[keys.watchlist],
                      args=[symbol, cap, keys.control, encode_control("add", symbol)])
    if added == -1:
        raise HTTPException(422, f"watchlist is full: at most {cap} tickers")
    shown = grant.allows(symbol) and not grant.delay_s  # the cache is real time
    update = await read_latest_one(gw.redis, keys, symbol) if shown else None
    return {"ticker": symbol, "price": None if update is None else update.price}


@router.delete(
    "/api/watchlist/{ticker:path}", status_code=204, dependencies=[Depends(writer)]
)
async def remove_ticker(ticker: str, gw: GatewayDep) -> Response:
    """Remove a ticker; 404 when it is not on the watchlist.

    A member that is no valid symbol (written into Redis directly) is removed by its
    exact text; the producer never produced it, so no control message is sent.
    """
    keys = gw.settings.keys
    try:
        symbol = normalize_ticker(ticker)
    except InvalidTicker as e:
        if len(ticker) <= RAW_MEMBER_MAX and await gw.redis.srem(keys.watchlist, ticker):
            return Response(status_code=204)
        raise HTTPException(404, str(e)) from e
    if await gw.redis.srem(keys.watchlist, symbol):
        await gw.redis.publish(keys.control, encode_control("remove", symbol))
        return Response(status_code=204)
    if ticker != symbol and len(ticker) <= RAW_MEMBER_MAX and await gw.redis.srem(
        keys.watchlist, ticker
    ):  # e.g. "aapl" written directly: its valid form was never a member
        return Response(status_code=204)
    raise HTTPException(404, f"ticker {symbol} is not on the watchlist")
