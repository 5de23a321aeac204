"""Process helpers of the command line: exit with one line, and a child's environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import NoReturn


def fail(line: str) -> NoReturn:
    """Print one line to stderr and exit with status 2."""
    print(line, file=sys.stderr)
    raise SystemExit(2)


def child_environ(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with ``overrides`` applied, for a child process."""
    return {**os.environ, **overrides}
