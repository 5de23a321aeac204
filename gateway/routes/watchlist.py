"""The watchlist: ``NS:watchlist`` plus a control message so the producer follows.

An add is one script (`ADD_TICKER`): the membership check, the cap, the SADD and the
control message in one atomic step, so the cap holds across any number of gateways (as
three round trips, 100 concurrent adds under a cap of 20 left 42 members).

Members that are not valid symbols can only come from writing Redis directly; they are
left out of the list, and DELETE removes them by their exact text.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from gateway.access import ReadGrant, WriteGrant, writer
from gateway.cluster.delayed import cluster_state_at
from gateway.cluster.reads import read_one, read_some
from gateway.delayed import state_at
from gateway.deps import Gateway, GatewayDep
from shared.codec import decode_update, encode_control
from shared.errors import CodecError
from shared.models import InvalidTicker, PriceUpdate, is_valid_ticker, normalize_ticker
from shared.redisio import read_latest, read_latest_one

router = APIRouter()
T = TypeVar("T")

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
# On a Cluster the control channel is a shard channel of the meta slot, the watchlist's
# (docs/CLUSTER.md).
ADD_TICKER_SHARDED = ADD_TICKER.replace("'PUBLISH'", "'SPUBLISH'")
RAW_MEMBER_MAX = 256  # longest raw text DELETE tries to remove as a member

Use = Callable[[aioredis.Redis], Awaitable[T]]


async def on_meta(gw: Gateway, use: Use[T]) -> T:
    """``use(client)`` with the client of the watchlist's names (the meta slot's primary
    on a Cluster)."""
    if gw.cluster is not None:
        return await gw.cluster.meta(use)
    return await use(gw.redis)


async def latest_of(gw: Gateway, tickers: list[str]) -> dict[str, PriceUpdate]:
    """The cached updates of ``tickers``."""
    if gw.cluster is not None:
        return await read_some(gw.cluster, tickers)
    return await read_latest(gw.redis, gw.settings.keys, tickers)


async def latest_one(gw: Gateway, ticker: str) -> PriceUpdate | None:
    """The cached update of ``ticker``."""
    if gw.cluster is not None:
        return await read_one(gw.cluster, ticker)
    return await read_latest_one(gw.redis, gw.settings.keys, ticker)


async def publish_control(gw: Gateway, message: bytes) -> None:
    """Tell the producers of a watchlist change (``SPUBLISH`` on a Cluster)."""
    keys = gw.settings.layout.meta
    if gw.cluster is None:
        await gw.redis.publish(keys.control, message)
        return

    async def send(client: aioredis.Redis) -> None:
        await client.spublish(keys.control, message)

    await gw.cluster.meta(send)


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
    keys = gw.settings.layout.meta
    raw_members = await on_meta(gw, lambda client: client.smembers(keys.watchlist))
    texts = (m.decode(errors="replace") if isinstance(m, bytes) else str(m) for m in raw_members)
    members = sorted(t for t in texts if is_valid_ticker(t) and grant.allows(t))
    if grant.delay_s:
        cutoff = int((time.time() - grant.delay_s) * 1000)
        if gw.cluster is not None:
            delayed, _ = await cluster_state_at(gw.cluster, cutoff, frozenset(members))
        else:
            delayed, _ = await state_at(gw.redis, keys, cutoff, frozenset(members))
        return [{"ticker": t, "price": _price(delayed[t][1] if t in delayed else None)}
                for t in members]
    cached = await latest_of(gw, members)
    return [{"ticker": t, "price": cached[t].price if t in cached else None} for t in members]


@router.post("/api/watchlist", status_code=201)
async def add_ticker(
    body: AddTicker, gw: GatewayDep, grant: WriteGrant
) -> dict[str, Any]:
    """Add a ticker (adding twice is fine); the producer starts producing it."""
    keys = gw.settings.layout.meta
    symbol = _symbol(body.ticker, 422)
    cap = gw.settings.max_watchlist
    script = ADD_TICKER if gw.cluster is None else ADD_TICKER_SHARDED

    async def add(client: aioredis.Redis) -> Any:
        return await client.register_script(script)(
            keys=[keys.watchlist], args=[symbol, cap, keys.control, encode_control("add", symbol)])

    added = await on_meta(gw, add)
    if added == -1:
        raise HTTPException(422, f"watchlist is full: at most {cap} tickers")
    shown = grant.allows(symbol) and not grant.delay_s  # the cache is real time
    update = await latest_one(gw, symbol) if shown else None
    return {"ticker": symbol, "price": None if update is None else update.price}


@router.delete(
    "/api/watchlist/{ticker:path}", status_code=204, dependencies=[Depends(writer)]
)
async def remove_ticker(ticker: str, gw: GatewayDep) -> Response:
    """Remove a ticker; 404 when it is not on the watchlist.

    A member that is no valid symbol (written into Redis directly) is removed by its
    exact text; the producer never produced it, so no control message is sent.
    """
    keys = gw.settings.layout.meta

    async def remove(member: str) -> bool:
        return bool(await on_meta(gw, lambda client: client.srem(keys.watchlist, member)))

    try:
        symbol = normalize_ticker(ticker)
    except InvalidTicker as e:
        if len(ticker) <= RAW_MEMBER_MAX and await remove(ticker):
            return Response(status_code=204)
        raise HTTPException(404, str(e)) from e
    if await remove(symbol):
        await publish_control(gw, encode_control("remove", symbol))
        return Response(status_code=204)
    if ticker != symbol and len(ticker) <= RAW_MEMBER_MAX and await remove(
        ticker
    ):  # e.g. "aapl" written directly: its valid form was never a member
        return Response(status_code=204)
    raise HTTPException(404, f"ticker {symbol} is not on the watchlist")
