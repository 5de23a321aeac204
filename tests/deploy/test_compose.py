"""Scenario 15: docker-compose.yml and docker-compose.cluster.yml publish no Redis port,
run the services as a non-root user and limit their resources.
tests/deploy/test_packaging.py already checks the redis service has no `ports:`, and
producer/gateway users and limits; this adds what it leaves
open: no port of ANY service reaches Redis, no host networking, Redis itself is limited,
and the app services cannot gain privileges."""

from __future__ import annotations

import pytest

from tests.helpers.compose import CLUSTER_COMPOSE, COMPOSE_FILES, load

pytestmark = [pytest.mark.reliability]


def _published(service: dict) -> list[str]:
    return [str(p.get("target", "")) if isinstance(p, dict) else str(p)
            for p in service.get("ports", [])]


def _redis_services(services: dict) -> list[dict]:
    return [s for name, s in services.items() if s.get("command", [""])[0] == "redis-server"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_no_service_publishes_redis_or_shares_the_host_network(path):
    for name, service in load(path)["services"].items():
        assert service.get("network_mode") != "host", name
        for mapping in _published(service):
            assert not mapping.split(":")[-1].startswith("6379"), (name, mapping)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_service_has_cpu_and_memory_limits_and_redis_a_memory_cap(path):
    services = load(path)["services"]
    for name, service in services.items():
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and str(limits["memory"])[-1] in "MG", name
    redis_nodes = _redis_services(services)
    assert len(redis_nodes) == (6 if path == CLUSTER_COMPOSE else 1)
    for service in redis_nodes:
        command = service["command"]
        assert "--maxmemory" in command and "noeviction" in command


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("name", ["producer", "gateway"])
def test_app_services_run_unprivileged(path, name):
    service = load(path)["services"][name]
    uid = str(service["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["cap_drop"] == ["ALL"] and service["read_only"] is True
