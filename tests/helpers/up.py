"""`pricefeed up` as a real process tree, observed from outside."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from tests.helpers.poll import wait_for
from tests.helpers.support import ROOT


class Up:
    """``python -m pricefeed up`` in its own session (as a terminal would give it)."""

    def __init__(self, env: Mapping[str, str], workdir: Path) -> None:
        self.tmp = workdir / "tmp"  # TMPDIR of up: must be empty again after it exits
        self.tmp.mkdir()
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("PRICEFEED_") and k != "REDIS_URL"}
        full_env.update(TMPDIR=str(self.tmp), PYTHONUNBUFFERED="1")
        full_env.update(env)
        self.out_path, self.err_path = workdir / "up.out", workdir / "up.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pricefeed", "up"], cwd=ROOT, env=full_env,
                stdout=out, stderr=err, start_new_session=True)
        self.seen: set[int] = set()

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        """Every process below `up` right now (remembered, to check for orphans later)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            found = psutil.Process(self.proc.pid).children(recursive=True)
            self.seen.update(p.pid for p in found)
            return found
        return []

    def wait_url(self, timeout_s: float = 60.0) -> str:
        def announced() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited {self.proc.returncode}: {self.stderr()}")
            self.descendants()
            for line in self.stdout().splitlines():
                if "http://" in line:
                    return line
            return None
        return wait_for(announced, timeout_s, 0.05, "the URL line of pricefeed up")

    def wait_exit(self, timeout_s: float) -> tuple[int, float]:
        """The exit status and how long it took."""
        started = time.monotonic()

        def exited() -> bool:
            self.descendants()  # every process seen below it, for `orphans`
            return self.proc.poll() is not None

        wait_for(exited, timeout_s, 0.02, "pricefeed up to exit")
        return self.proc.returncode, time.monotonic() - started

    def orphans(self) -> list[int]:
        """Processes that were below `up` and are still alive (not zombies)."""
        alive = []
        for pid in self.seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        return alive

    def kill(self) -> None:
        """Last-resort cleanup for a failed test: the whole group, and what escaped it."""
        for pid in [self.proc.pid, *self.seen]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
