"""A tiny run of bench/access_bench.py (read access off against jwt) so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.procs import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_access_bench_measures_both_modes(tmp_path):
    cmd = [sys.executable, "-m", "bench.access_bench", "--clients", "20", "--window", "1",
           "--rounds", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["us_per_event_off"] > 0 and summary["us_per_event_jwt"] > 0, summary
    (run,) = tmp_path.glob("access-*")
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert [(r["mode"], r["connected"], r["failed"]) for r in rows] == [
        ("off", 20, 0), ("jwt", 20, 0)]
