"""docker-compose.yml, Dockerfile, .env.example and README: the promises a new user reads,
checked against the code (no Docker engine here)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.compose import environment, load
from tests.helpers.support import ROOT

SETTINGS_SRC = "".join((ROOT / "shared" / "settings" / f"{role}.py").read_text()
                       for role in ("common", "producer", "gateway"))
# Every variable shared/settings/ reads: the configuration surface.
VARIABLES = sorted(set(re.findall(r'"((?:PRICEFEED|MASSIVE)_[A-Z0-9_]+|REDIS_URL)"', SETTINGS_SRC)))
README = (ROOT / "README.md").read_text()


def test_settings_really_name_the_variables_we_check():
    assert {"REDIS_URL", "MASSIVE_API_KEY", "PRICEFEED_API_TOKEN", "PRICEFEED_PORT"} <= set(
        VARIABLES)


def test_redis_is_healthchecked_and_not_published_to_the_host():
    redis = load()["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert "ports" not in redis and "network_mode" not in redis
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["producer", "gateway"])
def test_services_run_hardened_and_wait_for_a_healthy_redis(name):
    compose = load()
    service = compose["services"][name]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    assert not str(service["user"]).startswith(("0", "root"))
    limits = service["deploy"]["resources"]["limits"]
    assert limits["cpus"] and limits["memory"]
    assert service["healthcheck"]["test"][0] == "CMD"
    assert service["build"] == "." and service["command"][:1] == ["pricefeed"]
    env = environment(service, {})
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    # Every setting passes through from .env: a value given there reaches the service.
    given = environment(service, {v: "from-dotenv" for v in VARIABLES})
    passed = {v for v in VARIABLES if given.get(v) == "from-dotenv"}
    # PRICEFEED_PARTITIONS is for a Cluster (docker-compose.cluster.yml): with this
    # compose file's one server it would stop both services.
    assert passed >= set(VARIABLES) - {"REDIS_URL", "PRICEFEED_HOST", "PRICEFEED_PORT",
                                       "PRICEFEED_PARTITIONS"}
    assert "PRICEFEED_PARTITIONS" not in env


def test_only_the_nginx_proxy_publishes_ports_8000_and_8443():
    services = load()["services"]
    assert [n for n, s in services.items() if "ports" in s] == ["proxy"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")  # the official image
    assert [str(m).rsplit(":", 1)[1] for m in proxy["ports"]] == ["8080", "8443"]
    assert str(proxy["ports"][0]).startswith("${PRICEFEED_PUBLISH_PORT:-8000}")
    assert proxy["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert "/api/health" in " ".join(services["gateway"]["healthcheck"]["test"])
    for mount in proxy["volumes"]:  # the config it runs is the one in the repo
        assert (ROOT / mount.split(":")[0]).exists(), mount


def test_compose_gateway_answers_only_localhost_names_unless_told():
    gateway = load()["services"]["gateway"]
    assert environment(gateway, {})["PRICEFEED_ALLOWED_HOSTS"] == "localhost,127.0.0.1,::1"
    given = {"PRICEFEED_ALLOWED_HOSTS": "prices.example"}
    assert environment(gateway, given)["PRICEFEED_ALLOWED_HOSTS"] == "prices.example"


def test_the_image_is_multi_stage_uv_locked_and_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert "uv sync --frozen --no-dev" in dockerfile
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.M)
    assert "PRICEFEED_HOST=0.0.0.0" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".env"} <= set(ignored)
    for copied in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+)", dockerfile, re.M):
        assert (ROOT / copied).exists(), f"the Dockerfile copies {copied}, which is missing"


def test_env_example_documents_every_setting():
    example = (ROOT / ".env.example").read_text()
    missing = [v for v in VARIABLES if v not in example]
    assert not missing


def test_readme_configuration_table_names_every_setting():
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README, re.M))
    assert set(VARIABLES) <= rows, set(VARIABLES) - rows


def test_readme_quick_start_is_two_commands_after_pip_install_uv():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", quick, re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert commands == ["pip install uv", "uv run pricefeed up", "uv run pytest"]


def test_ci_runs_the_readme_test_command():
    """.ci/run extracts the line after `## Tests`; it must be the suite's command."""
    extracted = subprocess.run(
        ["awk", "/^## Tests/{f=1} f&&/^uv run pytest/{print; exit}", "README.md"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == "uv run pytest"


def test_one_version_from_pyproject_to_the_command_and_the_changelog():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    from shared.version import VERSION

    assert VERSION == declared
    shown = subprocess.run([sys.executable, "-m", "pricefeed", "--version"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert (shown.returncode, shown.stdout.strip()) == (0, f"pricefeed {declared}")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{declared}]" in changelog and "## [Unreleased]" in changelog


def test_the_licence_is_mit_in_the_file_and_the_package_metadata():
    from importlib.metadata import metadata

    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert metadata("pricefeed")["License-Expression"] == "MIT"


def readme_block(lang: str, marker: str) -> str:
    (block,) = [b for b in re.findall(rf"^```{lang}\n(.*?)^```", README, re.S | re.M)
                if marker in b]
    return block


def test_the_readme_systemd_unit_runs_the_installed_command(tmp_path):
    import configparser
    import shutil

    unit = readme_block("ini", "ExecStart=")
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str  # systemd keys are case-sensitive
    parsed.read_string(unit)
    assert set(parsed.sections()) == {"Unit", "Service", "Install"}
    exec_start = parsed["Service"]["ExecStart"]
    assert exec_start == "/opt/pricefeed/.venv/bin/pricefeed gateway"
    # The same command from this checkout's virtualenv (where the README installs it).
    ours = exec_start.replace("/opt/pricefeed/.venv", sys.prefix)
    done = subprocess.run([*ours.split(), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "pricefeed gateway" in done.stdout, done.stderr
    assert parsed["Service"]["EnvironmentFile"] == "/etc/pricefeed.env"
    if shutil.which("systemd-analyze"):  # where systemd is there, it must accept the unit
        path = tmp_path / "pricefeed-gateway.service"
        path.write_text(unit.replace("/opt/pricefeed/.venv", sys.prefix))
        verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                                text=True, timeout=60)
        assert verify.returncode == 0, verify.stderr

