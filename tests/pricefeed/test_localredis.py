"""The embedded Redis of `pricefeed up`: usable by real clients in other processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import redis
import redis.asyncio as aioredis

from pricefeed.localredis import embedded_redis, find_server
from shared.redisio import redacted_url as redact
from tests.helpers.support import ROOT

OTHER_PROCESS = """
import sys, redis
r = redis.Redis.from_url(sys.argv[1])
r.hset("ns:latest", "AAPL", "1")
try:
    r.evalsha("0" * 40, 0)
except redis.exceptions.NoScriptError:
    pass
sha = r.script_load("return redis.call('HGET', KEYS[1], ARGV[1])")
print(r.evalsha(sha, 1, "ns:latest", "AAPL").decode())
"""


async def test_embedded_redis_serves_other_processes_and_survives_error_replies():
    async with embedded_redis() as url:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", OTHER_PROCESS, url], cwd=ROOT,
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "1"
        client = aioredis.from_url(url)
        try:
            assert await client.hget("ns:latest", "AAPL") == b"1"
        finally:
            await client.aclose()
    with pytest.raises(redis.ConnectionError):  # stopped with the block
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_redact_hides_the_password_only():
    assert redact("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redact("redis://app:s3cret@db/1") == "redis://app:***@db/1"
    assert redact("redis://db:6379/0") == "redis://db:6379/0"


def test_redis_server_on_path_comes_first(tmp_path):
    exe = tmp_path / "redis-server"  # only looked up here, never run
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    found = find_server(str(tmp_path))
    assert found is not None and found.path == str(exe), found
    assert found.origin == f"redis-server from PATH ({exe})"

