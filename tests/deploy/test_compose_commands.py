"""Each compose service's exact `command`, run here with its `environment` (Redis host
rewritten to the test's private redis-server), must pass its own healthcheck.

The commands run from a virtualenv made the way the Dockerfile makes the image's: only
the files it COPYs, `uv sync --frozen --no-dev --no-editable`, then the sources removed.
So a runtime import of a dev-only package, or a page file left out of the wheel, fails
here as it would in the container.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import httpx
import pytest

from tests.helpers.compose import environment, healthcheck_argv, load
from tests.helpers.poll import wait_for
from tests.helpers.support import ROOT, free_port

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def image_bin(tmp_path_factory) -> str:
    """The bin/ of a virtualenv built like the image's (see the module docstring)."""
    root = tmp_path_factory.mktemp("image")
    src, venv = root / "src", root / "venv"
    src.mkdir()
    build_stage = (ROOT / "Dockerfile").read_text().split("\nFROM ")[1]
    for line in re.findall(r"^COPY (?!--from)(.+)$", build_stage, re.M):
        for name in line.split()[:-1]:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, src / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, src / name)
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is needed to build the image's environment"
    subprocess.run([uv, "sync", "--frozen", "--no-dev", "--no-editable", "--offline", "-q"],
                   cwd=src, env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
                   check=True, timeout=120)
    shutil.rmtree(src)  # the runtime stage has the virtualenv only
    return str(venv / "bin")


def local_env(service: dict, redis_url: str, namespace: str, port: int,
              bin_dir: str) -> dict[str, str]:
    env = environment(service, {})
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    env.update(REDIS_URL=redis_url, PRICEFEED_NAMESPACE=namespace)
    if "PRICEFEED_PORT" in env:  # the container's 0.0.0.0:8000 becomes a private port
        env.update(PRICEFEED_HOST="127.0.0.1", PRICEFEED_PORT=str(port))
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", HOME=os.environ.get("HOME", "/tmp"),
               PYTHONUNBUFFERED="1")
    return env


def healthy(argv: list[str], env: dict[str, str]) -> bool:
    done = subprocess.run(argv, env=env, cwd="/", capture_output=True, timeout=30)
    return done.returncode == 0


def test_producer_and_gateway_commands_pass_their_own_healthchecks(
        redis_url, namespace, tmp_path, image_bin):
    services = load()["services"]
    port = free_port()
    started: list[subprocess.Popen] = []
    try:
        for name in ("producer", "gateway"):
            service = services[name]
            env = local_env(service, redis_url, namespace, port, image_bin)
            check = healthcheck_argv(service)
            assert not healthy(check, env), f"{name}'s healthcheck passes with nothing running"
            with (tmp_path / f"{name}.log").open("wb") as log:
                started.append(subprocess.Popen(
                    service["command"], env=env, cwd="/", stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))
            wait_for(lambda c=check, e=env: healthy(c, e), 30, 0.2, f"{name} healthy")
            assert started[-1].poll() is None, (tmp_path / f"{name}.log").read_text()
        # The page's files are in the image too.
        for path in ("/", "/static/app.js", "/static/style.css"):
            assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200
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
