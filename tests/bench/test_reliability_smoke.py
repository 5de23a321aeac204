"""A tiny run of bench/reliability.py (one scenario) so the figures' tool cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_the_reliability_report_carries_the_figures_a_scenario_measured(tmp_path: Path):
    out = tmp_path / "reliability.json"
    done = subprocess.run(
        [sys.executable, "bench/reliability.py", "-k", "gateway_killed_and_restarted",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    figures = report["figures"]["gateway_kill"]
    assert 0 < figures["restart_to_ready_s"] < 20 and figures["tickers_resumed"] == 5
    assert report["commit"] and len(report["loadavg_after"]) == 3
