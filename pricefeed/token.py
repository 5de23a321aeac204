"""`pricefeed token`: mint an access token for testing from the configured key.

With ``PRICEFEED_JWT_SECRET`` set it signs HS256 with it; with a public key configured
the matching private key must be given (``--private-key``). The token goes to stdout
alone, so ``TOKEN=$(pricefeed token ...)`` works; it is never logged.
"""

from __future__ import annotations

import argparse
import sys

from pricefeed.process import fail
from shared.models import InvalidTicker, normalize_ticker
from shared.settings import Settings, load_or_exit
from shared.tokens import ALL_TICKERS, SCOPES, mint, private_key_algorithm


def _tickers(raw: str) -> list[str] | str:
    if raw.strip() == ALL_TICKERS:
        return ALL_TICKERS
    try:
        return [normalize_ticker(t) for t in raw.split(",") if t.strip()]
    except InvalidTicker as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _scopes(raw: str) -> list[str]:
    parts = [p for p in raw.replace(",", " ").split() if p]
    if not parts or not set(parts) <= SCOPES:
        raise argparse.ArgumentTypeError("use read, write or read,write")
    return parts


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of `pricefeed token`."""
    p = argparse.ArgumentParser(
        prog="pricefeed token",
        description="Print a signed access token (JWT) for PRICEFEED_READ_AUTH=jwt, "
        "using PRICEFEED_JWT_SECRET (or --private-key) and PRICEFEED_JWT_AUDIENCE/ISSUER.",
    )
    p.add_argument("--tickers", type=_tickers, default=ALL_TICKERS,
                   help='comma list of entitled tickers, or "*" for all (default)')
    p.add_argument("--ttl", type=_positive, default=3600.0,
                   help="seconds until the token expires (default 3600)")
    p.add_argument("--delay", type=float, default=0.0,
                   help="delayed entitlement in seconds, e.g. 900 (default 0: real time)")
    p.add_argument("--scope", type=_scopes, default=["read"],
                   help="read, write or read,write (default read)")
    p.add_argument("--max-hz", type=_positive, default=None,
                   help="most events per second the client gets (default: no claim)")
    p.add_argument("--private-key", metavar="PEM_FILE",
                   help="RS256/ES256 private key when the gateway has PRICEFEED_JWT_PUBLIC_KEY")
    return p


def signing_key(settings: Settings, private_key_file: str | None) -> tuple[str, str]:
    """(key, algorithm) to sign with; exits with one line when there is none."""
    if private_key_file is not None:
        try:
            with open(private_key_file, encoding="ascii") as f:
                pem = f.read()
            return pem, private_key_algorithm(pem)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            fail(f"pricefeed token: --private-key: {e}")
    if settings.jwt_secret:
        return settings.jwt_secret.get(), "HS256"
    fail("pricefeed token: set PRICEFEED_JWT_SECRET, or give --private-key for the "
         "PRICEFEED_JWT_PUBLIC_KEY the gateway checks")


def main(argv: list[str]) -> int:
    """Print one token and a newline."""
    args = parser().parse_args(argv)
    if args.delay < 0:
        fail("pricefeed token: --delay must be 0 or more seconds")
    settings = load_or_exit()
    key, algorithm = signing_key(settings, args.private_key)
    token = mint(key, algorithm, tickers=args.tickers, ttl_s=args.ttl, scope=args.scope,
                 delay_s=args.delay or None, max_hz=args.max_hz,
                 audience=settings.jwt_audience, issuer=settings.jwt_issuer)
    sys.stdout.write(token + "\n")
    return 0
