"""Keys and tokens for the access suite: an HS256 secret, RSA and P-256 key pairs."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# Recognisable values, so a leak check can look for them in every output.
SECRET = "hs256-LEAKCHECK-secret-0123456789abcdef0123456789abcdef0123456789abcdef"
AUDIENCE = "pricefeed-test"
ISSUER = "https://issuer.test"


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str
    algorithm: str


def _pair(key: Any, algorithm: str) -> KeyPair:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyPair(private, public.decode(), algorithm)


@pytest.fixture(scope="session")
def rsa_pair() -> KeyPair:
    return _pair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


@pytest.fixture(scope="session")
def ec_pair() -> KeyPair:
    return _pair(ec.generate_private_key(ec.SECP256R1()), "ES256")


Mint = Callable[..., str]


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for a read of every ticker for a minute; overrides win (None drops)."""
    now = int(time.time())
    out: dict[str, Any] = {"exp": now + 60, "iat": now, "tickers": "*", "scope": "read",
                           "aud": AUDIENCE, "iss": ISSUER}
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def hs256(**overrides: Any) -> str:
    """A token signed with `SECRET`."""
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def unsigned(**overrides: Any) -> str:
    """An ``alg: none`` token (what an attacker sends)."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims(**overrides))}."


def jwt_env(**extra: str) -> dict[str, str]:
    """Environment of a gateway checking HS256 tokens with audience and issuer."""
    return {"PRICEFEED_READ_AUTH": "jwt", "PRICEFEED_JWT_SECRET": SECRET,
            "PRICEFEED_JWT_AUDIENCE": AUDIENCE, "PRICEFEED_JWT_ISSUER": ISSUER, **extra}
