"""The Sentinel topology of the Redis layer (docs/REDIS.md, "Sentinel"): its URL, the
client the builder makes of it, and that it works against real sentinels."""

from __future__ import annotations

import pytest

from shared.errors import SettingsError
from shared.redisio import POOLED, SERVICE, connect, redacted_url
from shared.redisio.connections import (
    CancelSafeSentinelConnection,
    CancelSafeSentinelSSLConnection,
)
from shared.redisio.sentinel import BlockingSentinelPool, SentinelTarget, parse_sentinel_url
from shared.settings import Settings
from tests.helpers.poll import wait_until
from tests.helpers.sentinel import SentinelGroup


def test_the_url_names_sentinels_master_db_and_credentials():
    assert parse_sentinel_url("redis+sentinel://app:p%40ss@h1:26380,h2,[::1]:5/prices/3") == \
        SentinelTarget((("h1", 26380), ("h2", 26379), ("::1", 5)), "prices", 3, "app", "p@ss")
    assert parse_sentinel_url("rediss+sentinel://h1/prices") == \
        SentinelTarget((("h1", 26379),), "prices", 0, tls=True)


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://h1:26379", "name the master group"),
    ("redis+sentinel://h1:26379/", "name the master group"),
    ("redis+sentinel://h1:26379/m/x", "the db must be a number"),
    ("redis+sentinel://h1:26379/m/0/more", "/<master>/<db>"),
    ("redis+sentinel://h1:99999/m", "port must be 1-65535"),
    ("redis+sentinel://h1,:1/m", "has no host"),
    ("redis+sentinel://h1/m?db=1", "no ?query"),
])
def test_a_bad_url_gets_one_line_naming_the_variable(url, says):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": url})
    message = str(caught.value)
    assert message.startswith("REDIS_URL=") and says in message and "\n" not in message


def test_the_password_is_never_shown():
    url = "redis+sentinel://app:s3cret@h1:26379,h2:26379/m/0"
    assert redacted_url(url) == "redis+sentinel://app:***@h1:26379,h2:26379/m/0"
    assert redacted_url("rediss+sentinel://:s3cret@h1/m") == "rediss+sentinel://:***@h1/m"
    assert redacted_url("redis+sentinel://h1/m") == "redis+sentinel://h1/m"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": "redis+sentinel://:s3cret@h1:0/m"})
    assert "s3cret" not in str(caught.value)


def test_tls_files_go_with_rediss_sentinel_only(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    env = {"PRICEFEED_REDIS_CA_FILE": str(ca)}
    Settings.from_env({**env, "REDIS_URL": "rediss+sentinel://h1/m"})
    with pytest.raises(SettingsError, match="PRICEFEED_REDIS_CA_FILE needs a rediss://"):
        Settings.from_env({**env, "REDIS_URL": "redis+sentinel://h1/m"})


async def test_the_builder_puts_cancel_safe_connections_in_every_pool():
    plain = connect(Settings(redis_url="redis+sentinel://:pw@127.0.0.1:1/m/2"), SERVICE)
    tls = connect(Settings(redis_url="rediss+sentinel://127.0.0.1:1/m"), POOLED)
    try:
        assert plain.connection_pool.connection_class is CancelSafeSentinelConnection
        assert plain.connection_pool.connection_kwargs["db"] == 2
        assert tls.connection_pool.connection_class is CancelSafeSentinelSSLConnection
        assert isinstance(tls.connection_pool, BlockingSentinelPool)
        manager = plain.connection_pool.sentinel_manager
        assert manager.sentinels[0].connection_pool.connection_kwargs["password"] == "pw"
    finally:
        await plain.aclose()
        await tls.aclose()


@pytest.mark.integration
async def test_clients_reach_the_primary_and_close_their_sentinel_connections(
    sentinel_group: SentinelGroup
):
    settings = Settings(redis_url=sentinel_group.url)
    service, pooled = connect(settings, SERVICE), connect(settings, POOLED)
    await service.set("pricefeed-test:k", "v")
    assert await pooled.get("pricefeed-test:k") == b"v"
    primary = sentinel_group.servers[0].client()
    assert primary.get("pricefeed-test:k") == b"v"
    sentinel = sentinel_group.sentinel(0)
    before = sentinel.info("clients")["connected_clients"]
    for client in (service, pooled):
        await client.aclose()
    assert sentinel.info("clients")["connected_clients"] < before


@pytest.mark.integration
async def test_a_pooled_connection_follows_a_failover_the_old_primary_lived_through(
    sentinel_group: SentinelGroup
):
    # The old primary stays a primary for seconds after SENTINEL FAILOVER: a connection
    # kept on it would write there, and those writes are lost when it becomes a replica.
    client = connect(Settings(redis_url=sentinel_group.url), SERVICE)
    new = sentinel_group.servers[1]
    try:
        await client.set("pricefeed-test:k", "before")
        sentinel_group.sentinel(0).sentinel_failover("pricefeed")
        await wait_until(lambda: sentinel_group.primary_port() == new.port, 10, "the switch")
        n = 0

        async def lands_on_the_new_primary() -> bool:
            nonlocal n
            n += 1
            await client.set("pricefeed-test:k", str(n))
            return new.client().get("pricefeed-test:k") == str(n).encode()

        await wait_until(lands_on_the_new_primary, 3, "a write on the new primary",
                         interval_s=0.05)
    finally:
        await client.aclose()
