"""Scenario 15: docker-compose.yml publishes no Redis port, runs the services as a non-root
user and limits their resources. tests/deploy/test_packaging.py already checks the redis
service has no `ports:`, and producer/gateway users and limits; this adds what it leaves
open: no port of ANY service reaches Redis, no host networking, Redis itself is limited,
and the app services cannot gain privileges."""

from __future__ import annotations

import pytest

from tests.helpers.compose import load

pytestmark = [pytest.mark.reliability]


def _published(service: dict) -> list[str]:
    return [str(p.get("target", "")) if isinstance(p, dict) else str(p)
            for p in service.get("ports", [])]


def test_no_service_publishes_redis_or_shares_the_host_network():
    for name, service in load()["services"].items():
        assert service.get("network_mode") != "host", name
        for mapping in _published(service):
            assert not mapping.split(":")[-1].startswith("6379"), (name, mapping)


def test_every_service_has_cpu_and_memory_limits_and_redis_a_memory_cap():
    services = load()["services"]
    for name, service in services.items():
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and str(limits["memory"])[-1] in "MG", name
    command = services["redis"]["command"]
    assert "--maxmemory" in command and "noeviction" in command


@pytest.mark.parametrize("name", ["producer", "gateway"])
def test_app_services_run_unprivileged(name):
    service = load()["services"][name]
    uid = str(service["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["cap_drop"] == ["ALL"] and service["read_only"] is True
