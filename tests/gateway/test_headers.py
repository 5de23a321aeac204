"""The Host allowlist's parsing and defaults (the process-level checks are in
tests/gateway/test_http_layer.py)."""

from __future__ import annotations

import pytest

from gateway.headers import host_allowed, host_name
from shared.errors import SettingsError
from shared.settings import LOOPBACK_HOSTS, Settings


@pytest.mark.parametrize(("header", "name"), [
    (b"localhost:8000", "localhost"), (b"LOCALHOST", "localhost"), (b"[::1]:8000", "::1"),
    (b"[::1]", "::1"), (b"127.0.0.1", "127.0.0.1"), (b"prices.example.:443", "prices.example"),
])
def test_host_name_drops_port_brackets_case_and_the_root_dot(header, name):
    assert host_name(header) == name


def test_a_domain_entry_allows_its_subdomains_and_nothing_that_merely_ends_alike():
    allowed = (".corp.example", "prices.example")
    assert host_allowed("corp.example", allowed) and host_allowed("a.b.corp.example", allowed)
    assert not host_allowed("evilcorp.example", allowed)
    assert not host_allowed("prices.example.evil", allowed)
    assert host_allowed("anything", ("*",))


@pytest.mark.parametrize(("bind", "expected"), [
    ("127.0.0.1", LOOPBACK_HOSTS), ("::1", LOOPBACK_HOSTS), ("localhost", LOOPBACK_HOSTS),
    ("127.0.0.2", LOOPBACK_HOSTS), ("0.0.0.0", ("*",)), ("::", ("*",)), ("10.0.0.5", ("*",)),
])
def test_allowed_hosts_default_to_localhost_names_only_when_bound_to_loopback(bind, expected):
    assert Settings.from_env({"PRICEFEED_HOST": bind}).allowed_hosts == expected


def test_allowed_hosts_are_normalised_and_a_port_is_refused():
    given = Settings.from_env({"PRICEFEED_ALLOWED_HOSTS": " Prices.Example. , [::1], *.corp.x"})
    assert given.allowed_hosts == ("prices.example", "::1", "*.corp.x")
    with pytest.raises(SettingsError, match="PRICEFEED_ALLOWED_HOSTS"):
        Settings.from_env({"PRICEFEED_ALLOWED_HOSTS": "prices.example:8000"})
