"""Token checks and their settings, without HTTP: every reason a token is refused."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway.access import Refused
from gateway.verifier import Verifier
from shared.errors import SettingsError
from shared.settings import Settings
from shared.tokens import mint
from tests.gateway.access.conftest import AUDIENCE, ISSUER, SECRET, claims, hs256, jwt_env, unsigned


def verifier(**env: str) -> Verifier:
    return Verifier(Settings.from_env(jwt_env(**env)))


def refusal(v: Verifier, token: str) -> str:
    with pytest.raises(Refused) as e:
        v.verify(token)
    assert e.value.status == 401
    return e.value.detail


def test_a_valid_token_grants_its_tickers_scopes_rate_and_delay():
    token = hs256(tickers=["aapl", "MSFT"], scope="read write", max_hz=2, delay_s=900)
    grant = verifier().verify(token)
    assert grant.tickers == {"AAPL", "MSFT"}
    assert grant.scopes == {"read", "write"}
    assert (grant.max_hz, grant.delay_s) == (2.0, 900.0)
    assert grant.expires_at == claims()["exp"] or abs(grant.expires_at - time.time() - 60) < 2


@pytest.mark.parametrize(("token", "reason"), [
    (lambda: unsigned(), "algorithm is not HS256"),
    (lambda: jwt.encode(claims(), SECRET, algorithm="HS512"), "algorithm is not HS256"),
    (lambda: jwt.encode(claims(), "another-secret-" + "z" * 64, algorithm="HS256"),
     "signature does not verify"),
    (lambda: hs256(exp=int(time.time()) - 5), "expired"),
    (lambda: hs256(nbf=int(time.time()) + 60), "not valid yet"),
    (lambda: hs256(aud="someone-else"), "another audience"),
    (lambda: hs256(aud=None), "lacks a claim"),
    (lambda: hs256(iss="https://evil.test"), "another issuer"),
    (lambda: hs256(exp=None), "lacks a claim"),
    (lambda: hs256(tickers=["AAPL", "not a ticker"]), '"tickers" claim'),
    (lambda: hs256(tickers="AAPL"), '"tickers" claim'),
    (lambda: hs256(max_hz=0), '"max_hz" claim'),
    (lambda: hs256(delay_s="900"), '"delay_s" claim'),
    (lambda: hs256(scope=7), '"scope" claim'),
    (lambda: "not-a-jwt", "not a JWT"),
    (lambda: hs256(padding="x" * 9000), "longer than 8192 bytes"),
])
def test_each_bad_token_is_refused_with_its_reason(token, reason):
    # Built when the test runs, not at collection: the times in them are relative to now.
    assert reason in refusal(verifier(), token())


def test_rs256_and_es256_verify_with_the_public_key_and_refuse_the_hs256_confusion(
    rsa_pair, ec_pair, tmp_path
):
    for pair in (rsa_pair, ec_pair):
        path = tmp_path / f"{pair.algorithm}.pem"
        path.write_text(pair.public_pem)
        for source in (str(path), pair.public_pem):
            v = Verifier(Settings.from_env({"PRICEFEED_READ_AUTH": "jwt",
                                            "PRICEFEED_JWT_PUBLIC_KEY": source}))
            assert v.algorithm == pair.algorithm
            good = mint(pair.private_pem, pair.algorithm, tickers=["AAPL"], ttl_s=60)
            assert v.verify(good).tickers == {"AAPL"}
            # Signing HS256 with the public key as the secret is the classic confusion attack.
            forged = jwt.api_jws.PyJWS().encode(
                b'{"exp": 9999999999, "tickers": "*"}', pair.public_pem.encode()[:64],
                algorithm="HS256")
            assert "algorithm is not" in refusal(v, forged)
    other = mint(ec_pair.private_pem, "ES256", tickers="*", ttl_s=60)
    rsa_only = Verifier(Settings.from_env({"PRICEFEED_READ_AUTH": "jwt",
                                           "PRICEFEED_JWT_PUBLIC_KEY": rsa_pair.public_pem}))
    assert "algorithm is not RS256" in refusal(rsa_only, other)


def test_the_minted_token_carries_what_the_cli_was_asked_for():
    token = mint(SECRET, "HS256", tickers=["MSFT", "AAPL"], ttl_s=30, scope=["write", "read"],
                 delay_s=900, max_hz=5, audience=AUDIENCE, issuer=ISSUER)
    grant = verifier().verify(token)
    assert (grant.tickers, grant.scopes, grant.delay_s, grant.max_hz) == (
        {"AAPL", "MSFT"}, {"read", "write"}, 900.0, 5.0)


@pytest.mark.parametrize(("env", "named"), [
    ({"PRICEFEED_READ_AUTH": "jwt"}, "PRICEFEED_READ_AUTH=jwt needs PRICEFEED_JWT_SECRET"),
    ({"PRICEFEED_READ_AUTH": "oauth"}, "PRICEFEED_READ_AUTH"),
    ({"PRICEFEED_JWT_SECRET": "short"}, "PRICEFEED_JWT_SECRET=<hidden> is invalid"),
    ({"PRICEFEED_JWT_PUBLIC_KEY": "/nonexistent.pem"}, "PRICEFEED_JWT_PUBLIC_KEY"),
    ({"PRICEFEED_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nxx"}, "not a PEM public key"),
    ({"PRICEFEED_JWT_SECRET": SECRET, "PRICEFEED_JWT_PUBLIC_KEY": "x"}, "both"),
    ({"PRICEFEED_MAX_HZ": "0"}, "PRICEFEED_MAX_HZ"),
    ({"PRICEFEED_REDIS_CA_FILE": "/nonexistent/ca.pem"}, "PRICEFEED_REDIS_CA_FILE"),
    ({"PRICEFEED_REDIS_CERT_FILE": "/etc/hostname"}, "PRICEFEED_REDIS_KEY_FILE"),
    ({"PRICEFEED_REDIS_CA_FILE": "/etc/hostname"}, "needs a rediss:// REDIS_URL"),
])
def test_bad_access_settings_stop_with_a_line_naming_the_variable(env, named):
    with pytest.raises(SettingsError) as e:
        Settings.from_env(env)
    assert named in str(e.value) and "\n" not in str(e.value)
    assert SECRET not in str(e.value)
