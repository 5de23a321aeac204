"""The one version of pricefeed: the installed package's, as `pyproject.toml` sets it.

`pricefeed --version`, `/api/health` and the start-up log lines all report this.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Final


def _installed_version() -> str:
    try:
        return version("pricefeed")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


VERSION: Final[str] = _installed_version()
