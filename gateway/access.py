"""Who may read what: the token of a request, verified once, as a `Grant`.

With ``PRICEFEED_READ_AUTH=jwt`` every read carries a JWT (docs/ACCESS.md); it is checked
when the request arrives, never per event: a stream holds its `Grant` and a timer for
the token's expiry. With ``none`` every request gets `OPEN`, today's behaviour.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Final

from fastapi import Depends, HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from gateway.deps import GatewayDep
from shared.models import InvalidTicker, normalize_ticker
from shared.settings import Settings
from shared.tokens import SCOPES

if TYPE_CHECKING:  # PyJWT costs a gateway ~0.3 s of start-up; only jwt mode loads it
    from gateway.verifier import Verifier

COOKIE: Final[str] = "pricefeed_token"
QUERY: Final[str] = "access_token"


@dataclass(frozen=True, slots=True)
class Grant:
    """What one verified token allows (`OPEN` when read access is not enforced)."""

    tickers: frozenset[str] | None  # None: every ticker
    scopes: frozenset[str]
    max_hz: float | None = None
    delay_s: float = 0.0
    expires_at: float | None = None  # Unix time

    def allows(self, ticker: str) -> bool:
        """True when this grant may see ``ticker``."""
        return self.tickers is None or ticker in self.tickers

    def narrow(self, wanted: frozenset[str] | None) -> frozenset[str] | None:
        """The requested tickers cut to the entitlement (None: all that is allowed)."""
        if self.tickers is None:
            return wanted
        return self.tickers if wanted is None else wanted & self.tickers


OPEN: Final[Grant] = Grant(None, SCOPES)


class Refused(Exception):
    """A request without the access it needs; `response` is the JSON answer."""

    def __init__(self, status: int, detail: str, error: str = "invalid_token") -> None:
        super().__init__(detail)
        self.status, self.detail, self.error = status, detail, error

    def response(self) -> JSONResponse:
        """401/403 JSON with the RFC 6750 ``WWW-Authenticate`` challenge."""
        challenge = 'Bearer realm="pricefeed"'
        if self.error:  # none when the request carried no token at all
            challenge += f', error="{self.error}"'
        return JSONResponse({"detail": self.detail}, status_code=self.status,
                            headers={"WWW-Authenticate": challenge})


def entitled_symbol(ticker: str, grant: Grant) -> str:
    """``ticker`` normalised for a REST path: 422 when it is no ticker, 403 when the
    token does not cover it."""
    try:
        symbol = normalize_ticker(ticker)
    except InvalidTicker as e:
        raise HTTPException(422, f"ticker: {e}") from e
    if not grant.allows(symbol):
        raise Refused(403, f"the token does not cover {symbol}", error="insufficient_scope")
    return symbol


def bearer_of(conn: HTTPConnection) -> str | None:
    """The ``Authorization: Bearer`` token, if any."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def token_of(conn: HTTPConnection) -> str | None:
    """The request's token: ``Authorization: Bearer``, else ``?access_token=``, else the
    ``pricefeed_token`` cookie (an EventSource cannot set headers)."""
    return bearer_of(conn) or conn.query_params.get(QUERY) or conn.cookies.get(COOKIE) or None


def read_grant(conn: HTTPConnection, settings: Settings, verifier: Verifier | None) -> Grant:
    """The grant of a read request; `Refused` (401) when jwt mode finds no valid token."""
    if verifier is None:
        return OPEN
    token = token_of(conn)
    if token is None:
        raise Refused(401, "an access token is required (Authorization: Bearer, "
                           "?access_token= or the pricefeed_token cookie)", error="")
    grant = verifier.verify(token)
    if "read" not in grant.scopes:
        raise Refused(403, 'the token has no "read" scope', error="insufficient_scope")
    return grant


def write_grant(conn: HTTPConnection, settings: Settings, verifier: Verifier | None) -> Grant:
    """Who may change the watchlist: the static ``PRICEFEED_API_TOKEN`` (unchanged), or in
    jwt mode a token with the ``write`` scope; with neither configured, anyone."""
    static = settings.api_token.get()
    if not static and verifier is None:
        return OPEN
    token = bearer_of(conn)  # never a cookie or the query: no cross-site request can write
    if static and token is not None and hmac.compare_digest(token.encode(), static.encode()):
        return OPEN  # compare_digest: the comparison's time does not reveal the token
    if verifier is None or token is None:
        raise Refused(401, "a valid bearer token is required", error="" if token is None
                      else "invalid_token")
    grant = verifier.verify(token)
    if "write" not in grant.scopes:
        raise Refused(403, 'the token has no "write" scope', error="insufficient_scope")
    return grant


def seconds_left(grant: Grant) -> float | None:
    """Seconds until the grant's token expires (None: never)."""
    return None if grant.expires_at is None else grant.expires_at - time.time()


def reader(request: Request, gw: GatewayDep) -> Grant:
    """FastAPI dependency: the grant of a read request (raises `Refused`)."""
    return read_grant(request, gw.settings, gw.verifier)


def writer(request: Request, gw: GatewayDep) -> Grant:
    """FastAPI dependency: the grant of a watchlist write (raises `Refused`)."""
    return write_grant(request, gw.settings, gw.verifier)


ReadGrant = Annotated[Grant, Depends(reader)]
WriteGrant = Annotated[Grant, Depends(writer)]


async def refused_handler(request: Request, exc: Exception) -> Response:
    """Renders `Refused` raised by a route or dependency."""
    assert isinstance(exc, Refused)
    return exc.response()
