"""The figures of docs/RELIABILITY.md: runs the fault and load scenarios (the tests
marked ``reliability``, each of which also asserts its limits) and writes what they
measured — recovery times, latencies, memory — with the load average and the commit.

The test suite itself writes no figures: a scenario records them only when this tool
asks (``PRICEFEED_TEST_FIGURES``, the file tests/conftest.py writes them to).

    uv run python bench/reliability.py --out reliability.json      # every scenario, ~2 min
    uv run python bench/reliability.py -k producer_killed          # one scenario
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(select: str | None) -> dict[str, object]:
    """Run the scenarios; their figures, or SystemExit when one failed."""
    with tempfile.TemporaryDirectory(prefix="pricefeed-figures-") as tmp:
        figures = Path(tmp) / "figures.json"
        cmd = [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p",
               "no:cacheprovider"]
        if select:
            cmd += ["-k", select]
        started, load_before = time.time(), os.getloadavg()
        done = subprocess.run(cmd, cwd=ROOT, env={**os.environ,
                                                  "PRICEFEED_TEST_FIGURES": str(figures)})
        if done.returncode != 0:
            raise SystemExit(f"a scenario failed (pytest exit {done.returncode}): its "
                             "figures are not a measurement")
        found = json.loads(figures.read_text()) if figures.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return {"commit": commit, "started": time.strftime("%Y-%m-%d %H:%M UTC",
                                                        time.gmtime(started)),
            "seconds": round(time.time() - started, 1), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "figures": found}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", dest="select", help="only the scenarios pytest -k selects")
    p.add_argument("--out", type=Path, help="write the report here (JSON)")
    args = p.parse_args(argv)
    report = run(args.select)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0 if report["figures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
