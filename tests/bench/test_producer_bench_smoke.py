"""A tiny run of the producer benchmark, so it cannot rot (it is not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.support import ROOT

pytestmark = pytest.mark.integration


def test_the_producer_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "producer.json"
    done = subprocess.run(
        [sys.executable, "bench/producer_bench.py", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = {(r["implementation"], r["tickers"]): r for r in result["throughput"]}
    impls = ("baseline", "ours-log-off", "ours")
    assert set(rows) == {(impl, n) for impl in impls for n in (10, 200)}
    assert all(r["updates_per_s"] > 0 for r in rows.values())
    assert all((r["log_entries"] > 0) == (r["implementation"] == "ours") for r in rows.values())
    assert 0 <= result["default_load"]["core_percent"] < 100
