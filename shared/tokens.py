"""Read-access tokens: the claims a gateway honours, and minting one for tests.

A token is a JWT (docs/ACCESS.md). The gateway verifies it (`gateway.access`); the
`pricefeed token` command mints one with `mint`. Both sides agree on the claim names here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

# PyJWT and cryptography are imported where they are used: they cost every process
# ~0.3 s of start-up, and only the token command and a jwt-mode gateway need them.

# Longer tokens are refused unread: a token travels in a header, a query string or a
# cookie, and 8 KB is the smallest header limit of common proxies (nginx's default).
MAX_TOKEN_BYTES: Final[int] = 8192
SCOPES: Final[frozenset[str]] = frozenset({"read", "write"})
ALL_TICKERS: Final[str] = "*"


def public_key_algorithm(pem: str) -> str:
    """RS256 for an RSA public key, ES256 for a P-256 one; ValueError otherwise."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as e:
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from e
    return _algorithm_of(key)


def private_key_algorithm(pem: str) -> str:
    """The algorithm a PEM private key signs with (RS256 or ES256); ValueError otherwise."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise ValueError("not an unencrypted PEM private key") from e
    return _algorithm_of(key)


def _algorithm_of(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ValueError("an RSA key needs at least 2048 bits")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("an EC key must be on curve P-256 (ES256)")
        return "ES256"
    raise ValueError("use an RSA (RS256) or P-256 EC (ES256) key")


def mint(
    key: str, algorithm: str, *, tickers: Iterable[str] | str, ttl_s: float,
    scope: Iterable[str] = ("read",), delay_s: float | None = None,
    max_hz: float | None = None, audience: str | None = None, issuer: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token with the claims `gateway.access` reads; ``key`` is the HS256 secret
    or a PEM private key."""
    import jwt

    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "tickers": ALL_TICKERS if tickers == ALL_TICKERS else sorted(set(tickers)),
        "scope": " ".join(sorted(set(scope))),
    }
    if delay_s:
        claims["delay_s"] = delay_s
    if max_hz is not None:
        claims["max_hz"] = max_hz
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=algorithm)
