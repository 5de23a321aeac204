"""A tiny run of the gateway-on-a-Cluster benchmark, so it cannot rot (not timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.support import ROOT

pytestmark = pytest.mark.integration


def test_the_gateway_cluster_benchmark_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.gateway_cluster_bench", "--clients", "5", "--window",
         "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads(next(tmp_path.glob("gateway-cluster-*/results.json")).read_text())["rows"]
    assert [r["topology"] for r in rows] == ["server", "cluster"]
    for row in rows:
        assert row["connected"] == 5 and row["delivered"] > 0
        assert row["gateway_us_per_event"] > 0 and row["gateway_us_per_update"] > 0
