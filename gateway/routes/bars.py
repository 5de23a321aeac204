"""``GET /api/bars/{ticker}``: the stored 1 s or 1 min bars of one ticker (README "Bars")."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel

from gateway.access import ReadGrant, entitled_symbol
from gateway.bars import MAX_LIMIT, bars_body, read_bars
from gateway.cluster.delayed import cluster_bars_until
from gateway.cluster.reads import cluster_bars
from gateway.delayed import bars_until
from gateway.deps import GatewayDep

router = APIRouter()


class BarOut(BaseModel):
    """One bar: start (Unix s, UTC-aligned), OHLC, update count, volume or null."""

    t: int
    o: float
    h: float
    l: float  # noqa: E741 - the contract's key
    c: float
    n: int
    v: float | None
    partial: bool


class BarsOut(BaseModel):
    """The answer of ``GET /api/bars/{ticker}``."""

    ticker: str
    interval: Literal["1s", "1m"]
    bars: list[BarOut]


@router.get(
    "/api/bars/{ticker}", response_model=None,
    responses={200: {"model": BarsOut}, 404: {"description": "unknown ticker"},
               403: {"description": "the access token does not cover the ticker"}},
)
async def bars(
    ticker: str,
    gw: GatewayDep,
    grant: ReadGrant,
    interval: Literal["1s", "1m"] = Query("1m", description="bar width"),
    limit: int = Query(300, ge=1, le=MAX_LIMIT, description="most bars returned"),
    since: float | None = Query(
        None, ge=0, lt=1e11, allow_inf_nan=False,
        description="only bars starting at or after this Unix time (s); then the oldest first",
    ),
) -> Response:
    """Bars oldest first; the last one is the forming bar (``partial: true``) when there is
    one. Without ``since``: the newest ``limit`` bars."""
    symbol = entitled_symbol(ticker, grant)
    if grant.delay_s and gw.cluster is not None:
        found = await cluster_bars_until(gw.cluster, symbol, interval, limit, since,
                                         time.time() - grant.delay_s)
    elif grant.delay_s:  # closed bars that ended by now minus the delay, only
        found = await bars_until(gw.redis, gw.settings.keys, symbol, interval, limit, since,
                                 time.time() - grant.delay_s)
    elif gw.cluster is not None:
        found = await cluster_bars(gw.cluster, symbol, interval, limit, since)
    else:
        found = await read_bars(gw.redis, gw.settings.keys, symbol, interval, limit, since)
    if found is None:
        raise HTTPException(404, f"unknown ticker {symbol}")
    return Response(bars_body(symbol, interval, found), media_type="application/json")
