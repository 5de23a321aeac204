"""Scenario 8: the gateway fuzzed from its own OpenAPI schema (schemathesis + hypothesis),
positive and negative data, against the real process on a real Redis: no 5xx, and every
4xx carries a JSON error body."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from gateway.app import create_app
from shared.settings import Settings
from tests.reliability.harness import System, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# Negative data needs a schema to break: only a body has one (a path's {ticker} is any
# string, which positive data already covers; hostile strings: test_hostile_tickers.py).
CASES = [(op, mode) for op in OPERATIONS for mode in GenerationMode
         if mode is GenerationMode.POSITIVE or "requestBody" in op.definition.raw]
EXAMPLES = 60


@pytest.fixture(scope="module")
def gateway(redis_url: str) -> Iterator[System]:
    with system(redis_url, PRICEFEED_MAX_WATCHLIST="50") as started:
        yield started


def check(response: schemathesis.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
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
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        check(case.call(base_url=gateway.urls[0], session=session, timeout=10))

    run()
    assert all(p.alive() for p in [*gateway.gateways, *gateway.producers])
