"""`pricefeed up` as a user runs it: real processes, real Redis, signals from outside."""

from __future__ import annotations

import os
import shutil
import socket
import sys

import pytest

from tests.support import free_port
from tests.user.upproc import Up

pytestmark = pytest.mark.e2e


@pytest.fixture
def up_factory(tmp_path):
    started: list[Up] = []

    def make(env) -> Up:
        up = Up(env, tmp_path / f"up{len(started)}")
        started.append(up)
        return up

    (tmp_path / "up0").mkdir()
    (tmp_path / "up1").mkdir()
    yield make
    for up in started:
        up.kill()


def python_only_path(tmp_path) -> str:
    """A PATH with this Python but without redis-server: forces the embedded fallback."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    assert shutil.which("redis-server", path=str(bindir)) is None
    return f"{bindir}:/usr/bin/nonexistent"


def assert_one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
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
