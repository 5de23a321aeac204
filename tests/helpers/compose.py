"""Reading docker-compose.yml the way `docker compose` would, without Docker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.support import ROOT

COMPOSE = ROOT / "docker-compose.yml"
CLUSTER_COMPOSE = ROOT / "docker-compose.cluster.yml"
COMPOSE_FILES = (COMPOSE, CLUSTER_COMPOSE)
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def load(path: Path = COMPOSE) -> dict[str, Any]:
    with path.open() as f:
        return yaml.safe_load(f)


def interpolate(value: Any, env: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}`` substitution against ``env`` (an empty .env here)."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), str(value))


def environment(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """A service's environment (mapping or list form) after interpolation."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: interpolate(v, env) for k, v in raw.items()}


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    """The healthcheck test as an argv (CMD form)."""
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "healthchecks use the exec (CMD) form"
    return list(test[1:])
