"""The service processes `pricefeed up` runs: start, watch, stop with a bounded wait."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

# Lines worth showing on the console: everything but DEBUG/INFO chatter, in our log
# format ("12:00:00 INFO    name: ...") and uvicorn's ("INFO:     ...").
_QUIET = re.compile(r"^(\S+ (DEBUG|INFO)\s|(DEBUG|INFO):\s)")


class Child:
    """One ``python -m pricefeed <role>`` process whose output is filtered to stderr."""

    def __init__(self, role: str, proc: asyncio.subprocess.Process, verbose: bool) -> None:
        self.role = role
        self.proc = proc
        self.verbose = verbose
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        # Until the system is up, output is only kept: a child that dies at start is
        # then reported as one line, not a wall of traceback.
        # With --verbose everything is shown as it comes.
        self.held: list[str] | None = None if verbose else []
        self.pump = asyncio.create_task(self._pump(), name=f"{role}-output")

    @classmethod
    async def start(cls, role: str, env: Mapping[str, str], verbose: bool) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pricefeed", role, env=dict(env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(role, proc, verbose)

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self.tail.append(line)
            if self.verbose or not _QUIET.match(line):
                if self.held is None:
                    self._show(line)
                elif len(self.held) < 100:
                    self.held.append(line)

    def _show(self, line: str) -> None:
        print(f"[{self.role}] {line}", file=sys.stderr, flush=True)

    def release(self) -> None:
        """The system is up: show what was held back and pass output through from now."""
        held, self.held = self.held or [], None
        for line in held:
            self._show(line)

    async def exited(self) -> int:
        """Wait for the process to end (and its output to be read); its exit status."""
        rc = await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self.pump), 1.0)
        return rc

    def reason(self) -> str:
        """The most telling line of its output: the last error-looking one, else the last
        one above INFO; "" when it said nothing of note."""
        telling = [line for line in self.tail if not _QUIET.match(line)]
        for line in reversed(telling):
            if re.search(r"error|fail|cannot|invalid|in use|refused", line, re.I):
                return line
        return telling[-1] if telling else ""

    def describe_exit(self) -> str:
        """One line: how it ended and why, e.g. for "the producer exited (status 1): ..."."""
        rc = self.proc.returncode
        if rc is not None and rc < 0:
            how = f"was killed by {signal.Signals(-rc).name}"
        else:
            how = f"exited (status {rc})"
        why = self.reason()
        return f"the {self.role} {how}" + (f": {why}" if why else "")

    def send(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def close(self) -> None:
        """Stop reading its output (the process has ended or been killed)."""
        if not self.pump.done():
            self.pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.pump


async def stop_all(children: list[Child], grace_s: float) -> None:
    """SIGTERM every child, wait up to ``grace_s``, SIGKILL what is left; log what was."""
    for child in children:
        child.send(signal.SIGTERM)
    waits = [asyncio.create_task(c.proc.wait()) for c in children]
    if waits:
        await asyncio.wait(waits, timeout=grace_s)
    for child in children:
        if child.proc.returncode is None:
            log.warning("%s did not stop within %.1f s; killing it", child.role, grace_s)
            child.send(signal.SIGKILL)
    if waits:
        await asyncio.gather(*waits)
    for child in children:
        await child.close()
