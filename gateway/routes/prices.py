"""``GET /api/prices`` and ``GET /api/prices/{ticker}``: reads of the Redis cache."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from gateway.access import Grant, ReadGrant, entitled_symbol
from gateway.cluster.delayed import cluster_state_at, cluster_state_of
from gateway.cluster.reads import read_all_caches, read_one
from gateway.delayed import state_at
from gateway.deps import GatewayDep
from gateway.reads import read_cache
from gateway.updates import encode_updates
from shared.redisio import read_latest_one

router = APIRouter()


def json_response(body: bytes, status_code: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """Already-encoded JSON bytes as a response."""
    return Response(body, status_code=status_code, media_type="application/json",
                    headers=headers)


@router.get("/api/prices", response_model=None)
async def all_prices(gw: GatewayDep, grant: ReadGrant) -> Response:
    """Snapshot ``{TICKER: PriceUpdate}`` of every cached ticker the token may see."""
    if grant.delay_s:
        if gw.cluster is not None:
            delayed, _ = await cluster_state_at(gw.cluster, cutoff_ms(grant), grant.tickers)
        else:
            delayed, _ = await state_at(gw.redis, gw.settings.keys, cutoff_ms(grant),
                                        grant.tickers)
        return json_response(encode_updates(delayed), headers=delay_header(grant))
    if gw.cluster is not None:
        view = await read_all_caches(gw.cluster)
    else:
        view = await read_cache(gw.redis, gw.settings.keys)
    items = view.items()
    if grant.tickers is not None:
        items = {t: i for t, i in items.items() if t in grant.tickers}
    return json_response(encode_updates(items))


@router.get("/api/prices/{ticker}", response_model=None)
async def one_price(ticker: str, gw: GatewayDep, grant: ReadGrant) -> Response:
    """The cached PriceUpdate of one ticker; 404 when there is none, 403 when the token
    does not cover it."""
    symbol = entitled_symbol(ticker, grant)
    if grant.delay_s:
        if gw.cluster is not None:
            delayed = await cluster_state_of(gw.cluster, cutoff_ms(grant), symbol)
        else:
            delayed, _ = await state_at(gw.redis, gw.settings.keys, cutoff_ms(grant),
                                        frozenset({symbol}))
        if symbol not in delayed:
            raise HTTPException(404, f"no price for ticker {symbol} {grant.delay_s:g} s ago")
        return json_response(delayed[symbol][1], headers=delay_header(grant))
    if gw.cluster is not None:
        update = await read_one(gw.cluster, symbol)
    else:
        update = await read_latest_one(gw.redis, gw.settings.keys, symbol)
    if update is None:
        raise HTTPException(404, f"no price for ticker {symbol}")
    return json_response(orjson.dumps(update.to_dict()))


def cutoff_ms(grant: Grant) -> int:
    """Now minus the grant's delay, in Unix milliseconds."""
    return int((time.time() - grant.delay_s) * 1000)


def delay_header(grant: Grant) -> dict[str, str]:
    """Says a REST answer is delayed (the PriceUpdate JSON itself stays as it is)."""
    return {"X-Pricefeed-Delay": f"{grant.delay_s:g}"}
