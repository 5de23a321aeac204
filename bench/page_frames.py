"""Frame times of the page in headless Chromium with 100 tickers: without the chart (the
baseline), with the 1 min candles open, and with the 1 s line open (docs/PERFORMANCE.md).

Starts a private redis-server, a producer (100 tickers, the default 2 ticks/s) and a
gateway, opens the page, and records the time between animation frames for ``--seconds``
per scenario. Every process is stopped at the end, however the run ends.

    uv run python bench/page_frames.py [--seconds 10] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
TICKERS = [f"T{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(100)]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

RECORD = """(ms) => new Promise((done) => {
  const gaps = []; let last = performance.now(); const end = last + ms;
  function frame(now) { gaps.push(now - last); last = now;
    if (now < end) requestAnimationFrame(frame); else done(gaps); }
  requestAnimationFrame(frame); })"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def system(log_dir: Path) -> Iterator[str]:
    """Redis, producer and gateway; the gateway's URL."""
    redis_port, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}
    env.update({"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PRICEFEED_PORT": str(port),
                "PRICEFEED_TICKERS": ",".join(TICKERS), "PRICEFEED_NAMESPACE": "frames"})
    server = shutil.which("redis-server") or sys.exit("page_frames: no redis-server on PATH")
    procs = [subprocess.Popen([server, "--port", str(redis_port), "--save", "", "--appendonly",
                               "no"], stdout=subprocess.DEVNULL)]
    try:
        for role in ("producer", "gateway"):
            log = open(log_dir / f"{role}.log", "wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "pricefeed", role], cwd=ROOT,
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not ready(url + "/api/ready"):
            if time.monotonic() > deadline:
                sys.exit("page_frames: the gateway did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def summary(gaps: list[float]) -> dict[str, float]:
    gaps = sorted(gaps[1:])  # the first gap includes the scenario's own setup
    q = statistics.quantiles(gaps, n=100)
    return {"frames": len(gaps), "p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1),
            "p99_ms": round(q[98], 1), "max_ms": round(gaps[-1], 1),
            "over_50ms": sum(g > 50 for g in gaps)}


def scenarios(page: Page, url: str, seconds: float) -> dict[str, dict[str, float]]:
    page.goto(url + "/")
    page.wait_for_function(f"() => document.querySelectorAll('#rows tr').length === {len(TICKERS)}",
                           timeout=30_000)
    time.sleep(2)  # prefill fetches done, prices flowing
    out = {"100 rows, no chart (baseline)": summary(page.evaluate(RECORD, seconds * 1000))}
    page.locator(f'#rows tr[data-ticker="{TICKERS[0]}"] th').click()
    page.wait_for_function("() => pricefeedChart.backfilled", timeout=10_000)
    out["100 rows + 1 min candles"] = summary(page.evaluate(RECORD, seconds * 1000))
    page.click('[data-interval-choice="1s"]')
    page.wait_for_function("() => pricefeedChart.interval === '1s' && pricefeedChart.backfilled",
                           timeout=10_000)
    out["100 rows + 1 s line"] = summary(page.evaluate(RECORD, seconds * 1000))
    out["live bars drawn on the 1 s line"] = {"updates": page.evaluate("pricefeedChart.updates")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, system(Path(tmp)) as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            results = scenarios(page, url, args.seconds)
        finally:
            browser.close()
    print(f"load average {os.getloadavg()}")
    print("| scenario | frames | p50 ms | p95 ms | p99 ms | max ms | frames > 50 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if "frames" in r:
            print(f"| {name} | {r['frames']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
                  f"| {r['max_ms']} | {r['over_50ms']} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
