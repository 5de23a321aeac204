"""CPU and memory of a gateway's process tree over a measurement window (psutil).

The machine may be shared: besides CPU %, the run-queue wait (``/proc/<pid>/task/*/
schedstat``: time runnable but off a CPU) says how much other processes held it back.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _wait_s(procs: list[psutil.Process]) -> float:
    """Seconds the tree's threads have spent runnable but waiting for a CPU (Linux)."""
    total = 0
    for p in procs:
        for stat in Path(f"/proc/{p.pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[1])
    return total / 1e9


class TreeSampler:
    """CPU % (of one core) and RSS of a process and its children between two calls."""

    def __init__(self, pid: int, port: int = 0) -> None:
        self.pid, self.port = pid, port
        self._t0 = self._cpu0 = self._wait0 = 0.0
        self._cores0: list[float] = []

    def rss(self) -> int:
        """Resident memory of the tree, bytes."""
        total = 0
        for p in _tree(self.pid):
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def begin(self) -> None:
        tree = _tree(self.pid)
        self._t0, self._cpu0, self._wait0 = time.monotonic(), _cpu_s(tree), _wait_s(tree)
        self._cores0 = _busy_per_core()

    def end(self) -> dict[str, object]:
        wall, tree = time.monotonic() - self._t0, _tree(self.pid)
        cpu, wait = _cpu_s(tree) - self._cpu0, _wait_s(tree) - self._wait0
        cores = [
            round(100 * (b - a) / wall, 1)
            for a, b in zip(self._cores0, _busy_per_core(), strict=True)
        ]
        return {
            "cpu_s": round(cpu, 4),
            "cpu_pct": round(100 * cpu / wall, 1),
            "wait_pct": round(100 * wait / wall, 1),
            "rss_bytes": self.rss(),
            "core_busy_pct": cores,
        }


def _busy_per_core() -> list[float]:
    """Busy seconds per core so far (everything on the machine, other helpers included)."""
    return [t.user + t.nice + t.system + t.irq + t.softirq for t in psutil.cpu_times(percpu=True)]


def cpu_cores() -> int:
    return psutil.cpu_count() or 0
