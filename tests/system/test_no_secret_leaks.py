"""No token, secret, key or password in any output: a whole system with JWT read access,
a static write token and a password-protected Redis, driven through good and bad requests
on every path (header, query and cookie tokens), at DEBUG log level."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.gateway.access.conftest import SECRET, hs256, jwt_env, unsigned
from tests.helpers.support import ROOT
from tests.helpers.system import system
from tests.system.test_redis_security import SecuredRedis

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

STATIC = "static-LEAKCHECK-7781aa"
REDIS_PW = "redis-LEAKCHECK-pw-9931"
PATHS = ["/", "/metrics", "/api/ready", "/api/health", "/api/prices", "/api/prices/AAPL",
         "/api/prices/MSFT", "/api/watchlist", "/api/bars/AAPL", "/api/nothing",
         "/api/stream/prices?tickers=bad%20one"]


def test_no_token_secret_or_password_appears_in_any_output():
    redis = SecuredRedis(["--requirepass", REDIS_PW], {"password": REDIS_PW}).start()
    good = hs256(tickers=["AAPL"], scope="read write")
    tokens = [good, hs256(exp=int(time.time()) - 5), unsigned(), good[:-3] + "xyz",
              hs256(aud="other")]
    seen: list[str] = []
    try:
        env = {**jwt_env(), "PRICEFEED_API_TOKEN": STATIC, "PRICEFEED_LOG_LEVEL": "DEBUG"}
        with system(f"redis://:{REDIS_PW}@127.0.0.1:{redis.port}/0", **env) as sys_:
            with httpx.Client(base_url=sys_.urls[0], timeout=5) as client:
                for token in [None, *tokens, STATIC]:
                    for path in PATHS:
                        for how in ("header", "query", "cookie"):
                            seen.append(_call(client, path, token, how))
                    for body in ({"ticker": "IBM"}, {"ticker": "bad one"}):
                        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
                        r = client.post("/api/watchlist", json=body, headers=headers)
                        seen.append(f"POST {r.status_code} {r.headers} {r.text}")
            logs = [s.log_path.read_text() for s in (*sys_.producers, *sys_.gateways)]
        minted = subprocess.run(
            [sys.executable, "-m", "pricefeed", "token", "--tickers", "AAPL"], cwd=ROOT,
            capture_output=True, text=True, timeout=30,
            env={"PATH": "/usr/bin:/bin", **jwt_env()})
        assert minted.returncode == 0 and minted.stderr == "", minted.stderr
        seen.append(minted.stdout.replace(minted.stdout.strip(), "<the minted token>"))
    finally:
        redis.close()
    assert any("401" in s for s in seen) and any("200" in s for s in seen)
    for text in [*seen, *logs]:
        for secret in (SECRET, STATIC, REDIS_PW, *tokens):
            assert secret not in text, (secret[:12], text[:400])


def _call(client: httpx.Client, path: str, token: str | None, how: str) -> str:
    headers, params = {}, {}
    if token is not None and how == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None and how == "query":
        params["access_token"] = token
    elif token is not None:
        headers["Cookie"] = f"pricefeed_token={token}"
    if path.startswith("/api/stream"):
        with client.stream("GET", path, headers=headers, params=params) as r:
            head = f"{path} {r.status_code} {r.headers}"
            return head if r.status_code == 200 else head + r.read().decode()
    r = client.get(path, headers=headers, params=params)
    return f"{path} {r.status_code} {r.headers} {r.text}"
