"""Who may read what: the token of a request, verified once, as a `Grant`.

With ``PRICEFEED_READ_AUTH=jwt`` every read carries a JWT (docs/ACCESS.md); it is checked
when the request arrives, never per event: a stream holds its `Grant` and a timer for
the token's expiry. With ``none`` every request gets `OPEN`, today's behaviour.
"""

from __future__ import annotations

import hmac
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any, Final

import jwt
from fastapi import Depends
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from shared.models import InvalidTicker, normalize_ticker
from shared.settings import Settings
from shared.tokens import ALL_TICKERS, MAX_TOKEN_BYTES, SCOPES

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


class Verifier:
    """Checks tokens against the configured key, algorithm, audience and issuer."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.key: Any = settings.jwt_secret.get() or settings.jwt_public_key
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer

    def verify(self, token: str) -> Grant:
        """The grant of a valid token; `Refused` (401) naming what is wrong otherwise."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Refused(401, f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as e:
            raise Refused(401, "the token is not a JWT") from e
        if header.get("alg") != self.algorithm:
            raise Refused(401, f"the token's algorithm is not {self.algorithm}")
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[self.algorithm], audience=self.audience,
                issuer=self.issuer, options={"require": ["exp"], "verify_aud": bool(self.audience)},
            )
        except jwt.InvalidTokenError as e:
            raise Refused(401, _reason(e)) from e
        return grant_of(claims)


def _reason(error: jwt.InvalidTokenError) -> str:
    """A safe line for a failed check (PyJWT's messages never contain the token)."""
    reasons: list[tuple[type[Exception], str]] = [
        (jwt.ExpiredSignatureError, "the token has expired"),
        (jwt.ImmatureSignatureError, "the token is not valid yet (nbf)"),
        (jwt.InvalidAudienceError, "the token is for another audience (aud)"),
        (jwt.InvalidIssuerError, "the token is from another issuer (iss)"),
        (jwt.InvalidSignatureError, "the token's signature does not verify"),
        (jwt.MissingRequiredClaimError, f"the token lacks a claim: {error}"),
    ]
    for kind, line in reasons:
        if isinstance(error, kind):
            return line
    return "the token is invalid"


def grant_of(claims: dict[str, Any]) -> Grant:
    """The `Grant` the verified ``claims`` describe; `Refused` for a malformed claim."""
    return Grant(
        tickers=_tickers(claims.get("tickers")),
        scopes=_scopes(claims.get("scope", "read")),
        max_hz=_number(claims, "max_hz", 0.001, None),
        delay_s=_number(claims, "delay_s", 0.0, None) or 0.0,
        expires_at=float(claims["exp"]),
    )


def _tickers(value: object) -> frozenset[str] | None:
    if value == ALL_TICKERS:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise Refused(401, 'the token\'s "tickers" claim must be a list of symbols or "*"')
    try:
        return frozenset(normalize_ticker(t) for t in value)
    except InvalidTicker as e:
        raise Refused(401, f'the token\'s "tickers" claim: {e}') from e


def _scopes(value: object) -> frozenset[str]:
    parts = value.split() if isinstance(value, str) else value
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise Refused(401, 'the token\'s "scope" claim must be a string such as "read write"')
    return frozenset(parts) & SCOPES


def _number(claims: dict[str, Any], name: str, low: float, default: float | None) -> float | None:
    value = claims.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < low:
        raise Refused(401, f'the token\'s "{name}" claim must be a number of at least {low:g}')
    return float(value)


def token_of(conn: HTTPConnection) -> str | None:
    """The request's token: ``Authorization: Bearer``, else ``?access_token=``, else the
    ``pricefeed_token`` cookie (an EventSource cannot set headers)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.query_params.get(QUERY) or conn.cookies.get(COOKIE) or None


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
    token = token_of(conn)
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


def reader(request: Request) -> Grant:
    """FastAPI dependency: the grant of a read request (raises `Refused`)."""
    gw = request.app.state.gateway
    return read_grant(request, gw.settings, gw.verifier)


def writer(request: Request) -> Grant:
    """FastAPI dependency: the grant of a watchlist write (raises `Refused`)."""
    gw = request.app.state.gateway
    return write_grant(request, gw.settings, gw.verifier)


ReadGrant = Annotated[Grant, Depends(reader)]
WriteGrant = Annotated[Grant, Depends(writer)]


async def refused_handler(request: Request, exc: Exception) -> Response:
    """Renders `Refused` raised by a route or dependency."""
    assert isinstance(exc, Refused)
    return exc.response()
