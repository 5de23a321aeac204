"""Token verification with PyJWT: the configured key and algorithm, audience, issuer,
and the claims as a `Grant` (docs/ACCESS.md). Loaded only with PRICEFEED_READ_AUTH=jwt."""

from __future__ import annotations

import math
from typing import Any

import jwt

from gateway.access import Grant, Refused
from shared.models import InvalidTicker, normalize_ticker
from shared.settings import Settings
from shared.tokens import ALL_TICKERS, MAX_TOKEN_BYTES, SCOPES


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
