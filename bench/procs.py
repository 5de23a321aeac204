"""Processes of the gateway benchmark: a private Redis, the publisher, the gateways.

Every process is started in its own session, pinned with ``taskset``, logged to a file,
and registered with a `Procs` stack that stops all of them — SIGTERM to the process
group, SIGKILL after a grace period — however the run ends (error, Ctrl+C, SIGTERM).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_GATEWAY, CORE_REST = "0", "1"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``predicate`` until true; raise if ``proc`` exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout_s:.0f}s")
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def module_available(name: str) -> bool:
    """True when ``name`` can be imported from this checkout (e.g. ``gateway.server``)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the harness dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Procs:
    """Started processes, stopped in reverse order by `stop` or `stop_all`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        core: str,
        env: Mapping[str, str] = {},
        stdout: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """``argv`` pinned to ``core``; stderr (and stdout unless piped) to ``name``.log."""
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PRICEFEED_") and k != "REDIS_URL"
        }
        full_env.update(env, PYTHONUNBUFFERED="1")
        log = open(self.log_dir / f"{name}.log", "ab")
        try:
            proc = subprocess.Popen(
                ["taskset", "-c", core, *argv],
                cwd=ROOT,
                env=full_env,
                stdout=log if stdout is None else stdout,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        finally:
            log.close()
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 8.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``timeout_s``."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # The group may outlive its leader (a worker of a gateway): kill what is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


class RedisServer:
    """A private ``redis-server`` on a free port, on core 1, persisting nothing.

    Its working directory is a fresh one inside the run's log directory, so even a
    SIGKILLed run leaves nothing in /tmp.
    """

    def __init__(self, procs: Procs) -> None:
        self.procs = procs
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=procs.log_dir)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.proc = self.procs.start(
            "redis",
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
                "--maxclients",
                "30000",
            ],
            CORE_REST,
        )
        wait_until(self._answers, 10, "redis-server", self.proc)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def service_env(redis_url: str, namespace: str) -> dict[str, str]:
    """What every pricefeed-style process of the run is configured with."""
    return {
        "REDIS_URL": redis_url,
        "PRICEFEED_NAMESPACE": namespace,
        "PRICEFEED_LOG_LEVEL": "WARNING",
    }


def publisher_argv(
    kind: str, tickers: list[str], interval_s: float, redis_url: str, namespace: str
) -> tuple[list[str], dict[str, str]]:
    """The real producer, or the contract publisher of bench/ (the fallback)."""
    env = service_env(redis_url, namespace)
    if kind == "producer":
        env.update(
            PRICEFEED_TICK_INTERVAL=str(interval_s),
            PRICEFEED_TICKERS=",".join(tickers),
            PRICEFEED_SEED="1",
        )
        return [sys.executable, "-m", "pricefeed", "producer"], env
    return [
        sys.executable,
        "-m",
        "bench.contract_publisher",
        "--redis-url",
        redis_url,
        "--namespace",
        namespace,
        "--tickers",
        ",".join(tickers),
        "--interval",
        str(interval_s),
    ], env


def gateway_argv(
    name: str, port: int, redis_url: str, namespace: str
) -> tuple[list[str], dict[str, str]]:
    """Ours (``pricefeed gateway``) or a baseline under uvicorn (uvloop + httptools)."""
    env = service_env(redis_url, namespace)
    env.update(PRICEFEED_HOST="127.0.0.1", PRICEFEED_PORT=str(port), PRICEFEED_MAX_CLIENTS="20000")
    if name == "ours":
        return [sys.executable, "-m", "pricefeed", "gateway"], env
    if name.startswith("ours-"):  # ours on uvicorn's stock protocol: bench/gateway_variants.py
        return [sys.executable, "-m", "bench.gateway_variants", name.removeprefix("ours-")], env
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"bench.baseline_{name}_gateway:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
        "--backlog",
        "4096",
        "--timeout-graceful-shutdown",
        "2",
    ], env
