"""Scenario 8: the gateway fuzzed from its own OpenAPI schema (schemathesis + hypothesis),
positive and negative data, against the real process on a real Redis: no 5xx, and every
4xx carries a JSON error body."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from gateway.app import create_app
from shared.settings import Settings
from tests.gateway.access.conftest import hs256, jwt_env, unsigned
from tests.helpers.system import System, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# Negative data needs a schema to break: only a body has one (a path's {ticker} is any
# string, which positive data already covers; hostile strings: test_hostile_tickers.py).
CASES = [(op, mode) for op in OPERATIONS for mode in GenerationMode
         if mode is GenerationMode.POSITIVE or "requestBody" in op.definition.raw]
EXAMPLES = 60


@pytest.fixture(scope="module", params=["none", "jwt"])
def gateway(request, redis_url: str) -> Iterator[System]:
    """The gateway with read access open, and with JWT read access (docs/ACCESS.md)."""
    env = {"PRICEFEED_MAX_WATCHLIST": "50"}
    if request.param == "jwt":
        env.update(jwt_env())
    with system(redis_url, **env) as started:
        started.env["auth"] = request.param
        yield started


def auth_headers(mode: str, pick: int) -> dict[str, str]:
    """In jwt mode, each case carries one of: no token, an entitled reader and writer, a
    forged one, an expired one, one without the read scope (``pick`` chooses)."""
    if mode != "jwt":
        return {}
    tokens = [None, hs256(tickers=["AAPL", "MSFT"], scope="read write"), unsigned(),
              hs256(exp=int(time.time()) - 10), hs256(scope="write")]
    token = tokens[pick % len(tokens)]
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def check(response: schemathesis.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code in (401, 403):
        assert response.headers["www-authenticate"][0].startswith("Bearer"), response.headers
    if response.status_code >= 400:
        (ctype,) = response.headers["content-type"]
        assert ctype.startswith("application/json"), response.headers
        body = orjson.loads(response.content)
        assert isinstance(body, dict) and body.get("detail"), body


@pytest.mark.parametrize(("operation", "mode"), CASES,
                         ids=[f"{op.method} {op.path} {m.value}" for op, m in CASES])
def test_no_5xx_and_every_4xx_is_json(gateway, operation, mode):
    session = requests.Session()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), pick=st.integers(0, 4))
    def run(case: schemathesis.Case, pick: int) -> None:
        headers = auth_headers(gateway.env["auth"], pick)
        check(case.call(base_url=gateway.urls[0], session=session, timeout=10, headers=headers))

    run()
    assert all(p.alive() for p in [*gateway.gateways, *gateway.producers])
