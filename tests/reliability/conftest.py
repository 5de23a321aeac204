"""Writes the figures the scenarios measured to tests/artifacts/reliability/figures.json."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.reliability import test_faults, test_load, test_producer_redis_faults
from tests.reliability.harness import LOGS


@pytest.fixture(scope="session", autouse=True)
def figures() -> Iterator[None]:
    yield
    found = {**test_faults.FIGURES, **test_load.FIGURES, **test_producer_redis_faults.FIGURES}
    if found:
        LOGS.mkdir(parents=True, exist_ok=True)
        path = LOGS / "figures.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, **found, "loadavg": os.getloadavg()}, indent=1))
