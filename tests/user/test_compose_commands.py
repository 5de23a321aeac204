"""Each compose service's exact `command`, run here with its `environment` (Redis host
rewritten to the test's private redis-server), must pass its own healthcheck."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port, wait_for
from tests.user.compose import environment, healthcheck_argv, load

pytestmark = pytest.mark.e2e

VENV_BIN = str(Path(sys.executable).parent)  # where `pricefeed` and `python` live here


def local_env(service: dict, redis_url: str, namespace: str, port: int) -> dict[str, str]:
    env = environment(service, {})
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    env.update(REDIS_URL=redis_url, PRICEFEED_NAMESPACE=namespace)
    if "PRICEFEED_PORT" in env:  # the container's 0.0.0.0:8000 becomes a private port
        env.update(PRICEFEED_HOST="127.0.0.1", PRICEFEED_PORT=str(port))
    env.update(PATH=f"{VENV_BIN}:/usr/bin:/bin", HOME=os.environ.get("HOME", "/tmp"),
               PYTHONUNBUFFERED="1")
    return env


def healthy(argv: list[str], env: dict[str, str]) -> bool:
    done = subprocess.run(argv, env=env, cwd="/", capture_output=True, timeout=30)
    return done.returncode == 0


def test_producer_and_gateway_commands_pass_their_own_healthchecks(
        redis_url, namespace, tmp_path):
    services = load()["services"]
    port = free_port()
    started: list[subprocess.Popen] = []
    try:
        for name in ("producer", "gateway"):
            service = services[name]
            env = local_env(service, redis_url, namespace, port)
            check = healthcheck_argv(service)
            assert not healthy(check, env), f"{name}'s healthcheck passes with nothing running"
            with (tmp_path / f"{name}.log").open("wb") as log:
                started.append(subprocess.Popen(
                    service["command"], env=env, cwd="/", stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))
            wait_for(lambda c=check, e=env: healthy(c, e), 30, 0.2, f"{name} healthy")
            assert started[-1].poll() is None, (tmp_path / f"{name}.log").read_text()
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                assert proc.wait(10) == 0
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
