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

from tests.helpers.compose import CLUSTER_COMPOSE, environment, healthcheck_argv, load
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


def _local_node_command(command: list[str], port: int, bus_port: int, node_dir: str
                        ) -> list[str]:
    """A Cluster node's compose command on a private port: its announced name becomes
    localhost, its files go to ``node_dir``."""
    local = ["localhost" if re.fullmatch(r"redis-\d", arg) else arg for arg in command]
    return [shutil.which("redis-server") or "redis-server", *local[1:], "--port", str(port),
            "--cluster-port", str(bus_port), "--dir", node_dir, "--bind", "127.0.0.1",
            "--save", ""]


def _local_init(command: list[str], ports: dict[str, int]) -> list[str]:
    """The init service's `sh -c` with each node's name:6379 (and `-h name`) made local."""
    script = command[2]
    for name, port in ports.items():
        script = script.replace(f"{name}:6379", f"127.0.0.1:{port}")
        script = script.replace(f"-h {name} ", f"-h 127.0.0.1 -p {port} ")
    return [command[0], command[1], script]


def test_the_cluster_compose_commands_form_a_cluster_and_every_service_gets_healthy(
        tmp_path, image_bin):
    services = load(CLUSTER_COMPOSE)["services"]
    names = sorted(n for n in services if re.fullmatch(r"redis-\d", n))
    ports = {name: free_port() for name in names}
    started: list[subprocess.Popen] = []
    try:
        for name in names:
            node_dir = tmp_path / name
            node_dir.mkdir()
            started.append(subprocess.Popen(
                _local_node_command(services[name]["command"], ports[name], free_port(),
                                    str(node_dir)),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        init = _local_init(services["redis-cluster"]["command"], ports)
        wait_for(lambda: all(subprocess.run(
            ["redis-cli", "-p", str(p), "ping"], capture_output=True).stdout == b"PONG\n"
            for p in ports.values()), 10, 0.1, "six nodes answering")
        for _ in range(2):  # the second run finds a Cluster and leaves it as it is
            done = subprocess.run(init, capture_output=True, timeout=60)
            assert done.returncode == 0, done.stdout[-500:] + done.stderr[-500:]
        seeds = ",".join(f"127.0.0.1:{ports[n]}" for n in names[:3])
        service = services["producer"]
        assert service["scale"] == 2 and services["gateway"]["scale"] == 2
        env = environment(service, {})
        assert env["REDIS_URL"] == "redis+cluster://redis-1:6379,redis-2:6379,redis-3:6379"
        env.update(REDIS_URL=f"redis+cluster://{seeds}", PATH=f"{image_bin}:/usr/bin:/bin",
                   HOME=os.environ.get("HOME", "/tmp"), PYTHONUNBUFFERED="1",
                   PRICEFEED_PARTITIONS="6")
        check = healthcheck_argv(service)
        assert not healthy(check, env), "the producer healthcheck passes with none running"
        logs = []
        for i in range(2):
            logs.append(tmp_path / f"producer-{i}.log")
            with logs[-1].open("wb") as log:
                started.append(subprocess.Popen(
                    service["command"], env=env, cwd="/", stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))
        wait_for(lambda: healthy(check, env), 30, 0.2, "the producers healthy")
        gateway = services["gateway"]
        for i in range(2):  # two replicas, each on a private port here
            port = free_port()
            genv = {**environment(gateway, {}), "REDIS_URL": env["REDIS_URL"],
                    "PRICEFEED_PARTITIONS": "6", "PRICEFEED_HOST": "127.0.0.1",
                    "PRICEFEED_PORT": str(port), "PATH": env["PATH"], "HOME": env["HOME"],
                    "PYTHONUNBUFFERED": "1"}
            logs.append(tmp_path / f"gateway-{i}.log")
            with logs[-1].open("wb") as log:
                started.append(subprocess.Popen(
                    gateway["command"], env=genv, cwd="/", stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))
            gcheck = healthcheck_argv(gateway)
            wait_for(lambda c=gcheck, e=genv: healthy(c, e), 30, 0.2, f"gateway {i} healthy")
            wait_for(lambda p=port: httpx.get(f"http://127.0.0.1:{p}/api/ready",
                                              timeout=5).status_code == 200,
                     30, 0.2, f"gateway {i} ready: every partition subscribed and produced")
        assert all(p.poll() is None for p in started), [log.read_text() for log in logs]
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
