"""A process in a pseudo-terminal, as a person would run it, with its screen output."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping

from tests.helpers.support import ROOT

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")


class Terminal:
    """``python -m pricefeed <args>`` attached to a pty of ``rows`` x ``cols``."""

    def __init__(self, args: list[str], env: Mapping[str, str], rows: int = 40, cols: int = 120):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}
        full_env.update(env)
        full_env.update(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        full_env.pop("NO_COLOR", None)
        # subprocess, not pty.fork(): os.fork() in a threaded pytest warns on Python 3.12+.
        self.fd, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pricefeed", *args], cwd=ROOT, env=full_env,
                stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        finally:
            os.close(slave)
        self.raw = b""
        self.status: int | None = None

    def text(self) -> str:
        """Everything shown so far, without colours and cursor movements."""
        return ANSI.sub(b"", self.raw).decode(errors="replace")

    def read(self, timeout_s: float = 0.1) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if ready:
            with contextlib.suppress(OSError):  # EIO once the child has gone
                self.raw += os.read(self.fd, 65536)

    def wait_for_text(self, *needles: str, timeout_s: float = 15.0) -> str:
        """Read until every needle has appeared in the output since ``mark``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.read()
            shown = self.text()[self.mark_at:]
            if all(n in shown for n in needles):
                return shown
        raise AssertionError(
            f"{needles} not shown within {timeout_s}s; screen:\n{self.text()[-3000:]}")

    mark_at = 0

    def mark(self) -> None:
        """Later `wait_for_text` calls look only at output from here on."""
        self.read(0)
        self.mark_at = len(self.text())

    def press_ctrl_c(self) -> None:
        """What the terminal does on Ctrl+C: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait_exit(self, timeout_s: float = 5.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.read(0.05)
            if self.proc.poll() is not None:
                self.status = self.proc.returncode
                return self.status
        raise AssertionError(f"still running {timeout_s}s after Ctrl+C")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.fd)
