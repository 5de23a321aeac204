"""Smoke runs of the tick log benchmarks: they run and their figures are sane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.support import ROOT


def run(args: list[str]) -> None:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_memory_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "ticklog.json"
    run(["bench/ticklog_memory.py", "--ticks", "50", "--sizes", "10,100", "--out", str(out)])
    rows = json.loads(out.read_text())
    small, large = rows
    assert small["ticks"] == 50 and small["bytes_per_1000_ticks"] > 1000 * small["tick_map_bytes"]
    assert large["bytes_per_1000_ticks"] > 5 * small["bytes_per_1000_ticks"]


def test_the_resume_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "resume.json"
    run(["bench/resume_bench.py", "--clients", "5", "--out", str(out)])
    default, replay = json.loads(out.read_text())["runs"]
    assert default["mode"] == "default" and replay["mode"] == "replay=all"
    assert replay["bytes"] > 100 * default["bytes"] > 0  # 600 ticks against one event
