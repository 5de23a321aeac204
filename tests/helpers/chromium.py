"""Which Chromium the browser tests drive: the system's, else playwright's own.

Order: $PRICEFEED_TEST_CHROMIUM, then `chromium` (Debian's /usr/bin/chromium) or
`chromium-browser` on PATH, then playwright's downloaded Chromium; when none exists,
`playwright install chromium` is run once. When that fails too, the browser tests fail
with one line saying how to get one: they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from playwright.sync_api import sync_playwright

INSTALL_TIMEOUT_S = 600
HOW = ("install one (Debian/Ubuntu: apt-get install chromium), or let playwright fetch "
       "its own: uv run playwright install chromium")


def _playwrights_own() -> str | None:
    with sync_playwright() as pw:
        path = pw.chromium.executable_path
    return path if path and os.access(path, os.X_OK) else None


def find_chromium() -> str:
    """The executable to launch, or a failed test naming what to do."""
    given = os.environ.get("PRICEFEED_TEST_CHROMIUM", "").strip()
    if given:
        if not os.access(given, os.X_OK):
            pytest.fail(f"PRICEFEED_TEST_CHROMIUM={given} is not an executable", pytrace=False)
        return given
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    own = _playwrights_own()
    if own:
        return own
    done = subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    own = _playwrights_own()
    if own:
        return own
    lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    why = next((ln for ln in lines if ln.startswith("Error:")), lines[-1] if lines else "")
    pytest.fail(f"no Chromium for the browser tests, and `playwright install chromium` "
                f"failed ({why[:160] or f'status {done.returncode}'}): {HOW}", pytrace=False)
