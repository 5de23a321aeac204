"""A tiny run of the producer benchmark's Cluster mode, so it cannot rot (not timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.support import ROOT

pytestmark = pytest.mark.integration


def test_the_cluster_producer_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "producer-cluster.json"
    done = subprocess.run(
        [sys.executable, "bench/producer_bench.py", "--topology", "cluster", "--quick",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    modes = json.loads(out.read_text())["modes"]
    assert [(m["topology"], m["producers"]) for m in modes] == [
        ("server", 1), ("cluster", 1), ("cluster", 2)]
    for mode in modes:
        shards = 3 if mode["topology"] == "cluster" else 1
        assert len(mode["shards"]) == shards
        assert len(mode["producer_processes"]) == mode["producers"]
        assert mode["updates_per_s"] > 0
        # Every update is counted once on its shard and once on its producer.
        assert sum(r["updates_per_s"] for r in mode["shards"]) == pytest.approx(
            mode["updates_per_s"], abs=3)
        assert all(r["updates_per_s"] > 0 for r in mode["producer_processes"])
