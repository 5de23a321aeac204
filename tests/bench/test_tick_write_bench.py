"""A tiny run of the tick-write bench (bench/tick_write_bench.py) so it cannot rot: every
design writes the whole tick, and none writes anything under another owner's lease."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import tick_write_bench

pytestmark = pytest.mark.integration


def test_every_design_writes_whole_ticks_and_is_fenced(tmp_path: Path) -> None:
    out = tmp_path / "tick_write.json"
    # The bench itself asserts, per design, that the cache holds every ticker's last payload.
    assert tick_write_bench.main(["--tickers", "300", "--ticks", "2", "--rounds", "1",
                                  "--out", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["design"].split()[0] for r in rows] == [
        "evalsha", "function", "packed-function", "msgpack-function", "multi"]  # fmt: skip
    for row in rows:
        assert row["fenced"] is True, row["design"]
        assert row["tickers"] == 300 and row["wall_ms_per_tick"] > 0, row["design"]
