"""Scenario 11: every setting given an invalid value stops `pricefeed producer` and
`pricefeed gateway` with ONE line naming the variable and a non-zero exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.errors import SettingsError
from shared.settings import Settings
from tests.helpers.support import ROOT

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

# Every variable shared/settings/ reads, found in its source: a setting added later
# without an entry below fails `test_every_setting_has_an_invalid_value_here`.
SETTINGS_SRC = "".join((ROOT / "shared" / "settings" / f"{role}.py").read_text()
                       for role in ("common", "producer", "gateway"))
VARIABLES = set(re.findall(r'"((?:PRICEFEED|MASSIVE)_[A-Z0-9_]+|REDIS_URL)"', SETTINGS_SRC))
SECRET = "S3cr3t-Value"
INVALID = {
    "REDIS_URL": "http://localhost:6379",
    "PRICEFEED_NAMESPACE": "has space",
    "PRICEFEED_TICKERS": "AAPL,not a ticker",
    "PRICEFEED_TICK_INTERVAL": "nan",
    "PRICEFEED_POLL_INTERVAL": "-1",
    "PRICEFEED_SEED": "seven",
    "PRICEFEED_HOST": "bad/host",
    "PRICEFEED_PORT": "70000",
    "PRICEFEED_MAX_CLIENTS": "0",
    "PRICEFEED_MAX_STREAM_TICKERS": "1e3",
    "PRICEFEED_MAX_WATCHLIST": "-5",
    "PRICEFEED_CORS_ORIGINS": "ftp://example.com",
    "PRICEFEED_ALLOWED_HOSTS": "example.com:8000",
    "PRICEFEED_REQUEST_TIMEOUT": "0",
    "PRICEFEED_API_TOKEN": f"{SECRET} with spaces",
    "MASSIVE_API_KEY": f"{SECRET}\x01",
    "PRICEFEED_MASSIVE_BASE_URL": "not-a-url",
    "PRICEFEED_MASSIVE_MODE": "carrier-pigeon",
    "PRICEFEED_MASSIVE_WS_URL": "http://example.com/ws",
    "PRICEFEED_PING_INTERVAL": "0",
    "PRICEFEED_SEND_TIMEOUT": "inf",
    "PRICEFEED_LOG_LEVEL": "LOUD",
    "PRICEFEED_READ_AUTH": "maybe",
    "PRICEFEED_JWT_SECRET": f"{SECRET}-too-short",
    "PRICEFEED_JWT_PUBLIC_KEY": f"-----BEGIN PUBLIC KEY-----{SECRET}",
    "PRICEFEED_JWT_AUDIENCE": "a" * 300,
    "PRICEFEED_JWT_ISSUER": "i" * 300,
    "PRICEFEED_MAX_HZ": "0",
    "PRICEFEED_REDIS_CA_FILE": "/nonexistent/ca.pem",
    "PRICEFEED_REDIS_CERT_FILE": "/nonexistent/client.pem",
    "PRICEFEED_REDIS_KEY_FILE": "/nonexistent/client.key",
    "PRICEFEED_HISTORY_LEN": "-1",
    "PRICEFEED_PARTITIONS": "0",  # and with a one-server REDIS_URL any value
    "PRICEFEED_HISTORY_SECONDS": "0",
    "PRICEFEED_BARS": "maybe",
    "PRICEFEED_BARS_1S_RETENTION": "10",
    "PRICEFEED_BARS_1M_RETENTION": "60",
    "PRICEFEED_BARS_FORMING_INTERVAL": "11",
    "PRICEFEED_MASSIVE_CALLS_PER_MINUTE": "0",
}


def test_every_setting_has_an_invalid_value_here():
    assert VARIABLES == set(INVALID)


def _start(role: str, name: str, value: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PRICEFEED_", "MASSIVE_", "REDIS_URL"))}
    # Redis on a port nothing listens on: the process must stop before connecting.
    env.update({"REDIS_URL": "redis://127.0.0.1:1/0", name: value})
    return subprocess.Popen(
        [sys.executable, "-m", "pricefeed", role], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )


def _verdict(role: str, name: str, value: str) -> tuple[str, str, str] | None:
    """None when the process stopped with one line naming ``name``; else what went wrong."""
    proc = _start(role, name, value)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return (role, name, "still running after 30 s: the value was accepted")
    lines = out.strip().splitlines()
    if proc.returncode == 0 or len(lines) != 1 or name not in lines[0] or SECRET in out:
        return (role, name, f"exit {proc.returncode}: {out[-300:]}")
    return None


CHUNK = 8  # processes per test: each spends ~1-2 s importing, ~15 s on a loaded machine


@pytest.mark.parametrize("first", range(0, len(INVALID), CHUNK))
@pytest.mark.parametrize("role", ["producer", "gateway"])
def test_each_invalid_setting_stops_both_services_with_one_line(role, first):
    # A few at a time keep both cores busy; a chunk of the variables per test keeps each
    # test within the per-test timeout however many settings there are.
    chosen = list(INVALID.items())[first:first + CHUNK]
    runs = [(role, name, value) for name, value in chosen]
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda run: _verdict(*run), runs))
    assert [v for v in verdicts if v is not None] == []


@pytest.mark.parametrize("name", ["PRICEFEED_API_TOKEN", "MASSIVE_API_KEY"])
@pytest.mark.parametrize("value", [f"{SECRET} x", f"{SECRET}\x00", f"{SECRET}\r\nX-Injected: 1",
                                   f"{SECRET}é"])
def test_a_secret_with_spaces_or_control_characters_is_refused_without_showing_it(name, value):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: value})
    message = str(refused.value)
    assert name in message and SECRET not in message and "\n" not in message
    field = "api_token" if name == "PRICEFEED_API_TOKEN" else "massive_api_key"
    assert getattr(Settings.from_env({name: f"  {SECRET}  "}), field).get() == SECRET


def test_more_tickers_than_the_watchlist_cap_stops_the_producer_naming_both():
    env_proc = subprocess.run(
        [sys.executable, "-m", "pricefeed", "producer"], cwd=ROOT, text=True, timeout=30,
        capture_output=True,
        env={**{k: v for k, v in os.environ.items()
                if not k.startswith(("PRICEFEED_", "MASSIVE_", "REDIS_URL"))},
             "REDIS_URL": "redis://127.0.0.1:1/0", "PRICEFEED_TICKERS": "AAPL,MSFT,TSLA",
             "PRICEFEED_MAX_WATCHLIST": "2"},
    )
    lines = (env_proc.stdout + env_proc.stderr).strip().splitlines()
    assert env_proc.returncode == 2 and len(lines) == 1, lines
    assert "PRICEFEED_TICKERS" in lines[0] and "PRICEFEED_MAX_WATCHLIST=2" in lines[0]
    assert "3 tickers" in lines[0]
