"""The C load generator (bench/sse_loadgen.c), compiled with gcc when a run needs it.

The binary is cached under ``bench/results/bin`` (git-ignored), named by a hash of the
source and the flags, so an edited source is rebuilt and concurrent runs share one build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from bench.procs import ROOT

SOURCE = ROOT / "bench" / "sse_loadgen.c"
BUILD_DIR = ROOT / "bench" / "results" / "bin"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11")
# For tests: AddressSanitizer and UBSan abort the process on the first error.
SANITIZE_FLAGS = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=all")  # fmt: skip


class BuildError(RuntimeError):
    """gcc is missing or rejected the source."""


def build(sanitize: bool = False, build_dir: Path = BUILD_DIR) -> Path:
    """The path of the compiled load generator, compiling it first if needed."""
    flags = [*CFLAGS, *(SANITIZE_FLAGS if sanitize else ())]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(flags).encode()).hexdigest()[:12]
    exe = build_dir / f"sse_loadgen-{key}{'-asan' if sanitize else ''}"
    if exe.exists():
        return exe
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("gcc is not on PATH (apt-get install gcc libc6-dev)")
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_name(f"{exe.name}.{os.getpid()}.tmp")
    done = subprocess.run(
        [gcc, *flags, "-o", str(tmp), str(SOURCE), "-lm"], capture_output=True, text=True
    )
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"gcc failed on {SOURCE.name}:\n{done.stderr[-3000:]}")
    os.replace(tmp, exe)  # atomic: a concurrent run sees the whole binary or none
    return exe
