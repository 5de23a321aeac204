"""A tiny run of bench/bars_bench.py (tick log and bars on and off, GET /api/bars latency),
so it cannot rot when the producer's Redis names or the publisher change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.support import ROOT

pytestmark = pytest.mark.e2e


def test_the_bars_benchmark_measures_every_variant_and_the_api(tmp_path: Path) -> None:
    out = tmp_path / "bars.json"
    done = subprocess.run([sys.executable, "bench/bars_bench.py", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["throughput"]
    assert len(rows) == 3 and all(r["updates_per_s"] > 0 for r in rows), rows
    assert result["api"], result
