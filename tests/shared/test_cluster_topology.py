"""The Cluster topology (docs/CLUSTER.md): its URL, its settings, and the map from a set of
names to the primary serving their slot, against a real 3-primary + 3-replica Cluster."""

from __future__ import annotations

import zlib

import pytest
from redis.exceptions import MovedError

from shared.errors import SettingsError
from shared.keys import Keys, Layout, partition_of
from shared.redisio import SERVICE, cluster_topology, redacted_url
from shared.redisio.cluster import ClusterTarget, ClusterUnavailable, parse_cluster_url
from shared.settings import Settings
from tests.helpers.cluster import RedisClusterGroup

PASSWORD = "cluster-test-pw"


def test_a_cluster_url_names_its_seeds_credentials_and_tls():
    target = parse_cluster_url("redis+cluster://app:s%40cret@h1:7000,h2,[::1]:7002")
    assert target == ClusterTarget((("h1", 7000), ("h2", 6379), ("::1", 7002)), "app", "s@cret")
    assert target.node_url("10.0.0.5", 7001) == "redis://app:s%40cret@10.0.0.5:7001/0"
    tls = parse_cluster_url("rediss+cluster://:pw@h1:7000/0")
    assert tls.tls and tls.password == "pw" and tls.node_url("::1", 7) == "rediss://:pw@[::1]:7/0"


@pytest.mark.parametrize("url, says", [
    ("redis+cluster://h1:7000/1", "only db 0"),
    ("redis+cluster://h1:7000?x=1", "no ?query"),
    ("redis+cluster://h1:99999", "bad port"),
    ("redis+cluster://:pw@", "at least one seed"),
    ("redis+cluster://h1:7000,:7001", "without a host"),
])
def test_a_bad_cluster_url_is_one_line_naming_the_variable_without_the_password(url, says):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": url.replace("://", "://u:hunter2@", 1)
                               if "@" not in url else url})
    message = str(caught.value)
    assert message.startswith("REDIS_URL=") and says in message
    assert "hunter2" not in message and "\n" not in message


def test_partitions_default_to_16_on_a_cluster_and_are_refused_on_one_server():
    on_cluster = Settings.from_env({"REDIS_URL": "redis+cluster://h1:7000"})
    assert on_cluster.partitions == 16 and on_cluster.layout.clustered
    assert Settings.from_env({"REDIS_URL": "redis+cluster://h1:7000",
                                  "PRICEFEED_PARTITIONS": "3"}).partitions == 3
    one = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert one.partitions == 0 and one.layout.all() == [Keys()]
    with pytest.raises(SettingsError, match="PRICEFEED_PARTITIONS applies to a Cluster"):
        Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0",
                               "PRICEFEED_PARTITIONS": "4"})
    with pytest.raises(SettingsError, match="PRICEFEED_PARTITIONS"):
        Settings.from_env({"REDIS_URL": "redis+cluster://h1:7000",
                               "PRICEFEED_PARTITIONS": "0"})


def test_the_names_of_one_server_are_unchanged_and_a_cluster_tags_each_partition():
    assert Keys().latest == "pricefeed:latest" and not Keys().sharded
    layout = Layout("ns", 16)
    # The documented mapping: CRC-32 (IEEE) of the ticker's UTF-8 bytes, mod P.
    assert partition_of("AAPL", 16) == zlib.crc32(b"AAPL") % 16 == 12
    aapl = layout.of("AAPL")
    assert aapl.latest == "ns:{p12}:latest" and aapl.price("AAPL") == "ns:{p12}:price:AAPL"
    assert aapl.ticks == "ns:{p12}:ticks" and aapl.lease == "ns:{p12}:producer:lease"
    assert layout.meta.watchlist == "ns:{meta}:watchlist" and layout.meta.sharded
    with pytest.raises(ValueError):
        layout.partition(16)


def test_redacted_cluster_url_hides_the_password():
    assert redacted_url("redis+cluster://app:pw@h1:7000,h2:7001") == \
        "redis+cluster://app:***@h1:7000,h2:7001"
    assert redacted_url("redis+cluster://h1:7000") == "redis+cluster://h1:7000"


@pytest.fixture(scope="module")
def cluster():
    group = RedisClusterGroup(password=PASSWORD).start()
    try:
        yield group
    finally:
        group.close()


@pytest.mark.integration
async def test_each_partition_is_written_on_the_primary_serving_its_slot(cluster):
    settings = Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": "16"})
    topology = cluster_topology(settings, SERVICE)
    try:
        await topology.refresh()
        for keys in settings.layout.all():
            client = topology.client_for(keys)
            await client.set(keys.seq, keys.base)  # a node refuses a key of another's slot
            assert topology.address_of(keys)[1] == cluster.primary_of(keys.seq).port
        by_node = topology.group(dict(enumerate(settings.layout.all())))
        assert sorted(i for group in by_node.values() for i in group) == list(range(16))
        assert len(by_node) == 3  # 16 partitions spread over the three primaries
    finally:
        await topology.aclose()


@pytest.mark.integration
async def test_a_moved_slot_is_followed_after_a_refresh(cluster):
    # Partition 20 of 32: a slot no other test wrote to, so it moves without a migration.
    settings = Settings.from_env({"REDIS_URL": cluster.url, "PRICEFEED_PARTITIONS": "32"})
    keys = settings.layout.partition(20)
    topology = cluster_topology(settings, SERVICE)
    try:
        await topology.refresh()
        old = topology.address_of(keys)
        slot = cluster.client().keyslot(keys.seq)
        target = next(n for n in cluster.nodes if n.port != old[1]
                      and cluster.node_client(n.port).info("replication")["role"] == "master")
        cluster.assign_slot(slot, target.port)  # an empty slot moves without migrating keys
        with pytest.raises(MovedError):
            await topology.client_for(keys).set(keys.seq, 1)
        generation = topology.generation
        await topology.refresh(force=True)
        assert topology.address_of(keys) == ("127.0.0.1", target.port)
        assert topology.generation == generation + 1
        await topology.client_for(keys).set(keys.seq, 1)
    finally:
        await topology.aclose()


@pytest.mark.integration
async def test_a_wrong_password_or_no_node_is_a_clear_error(cluster):
    wrong = Settings.from_env(
        {"REDIS_URL": cluster.url.replace(PASSWORD, "wrong-pw")})
    topology = cluster_topology(wrong, SERVICE)
    with pytest.raises(ClusterUnavailable, match="AuthenticationError") as caught:
        await topology.refresh()
    assert "wrong-pw" not in str(caught.value)
    nobody = cluster_topology(Settings.from_env(
        {"REDIS_URL": "redis+cluster://127.0.0.1:1"}), SERVICE)
    with pytest.raises(ClusterUnavailable, match="no Cluster node answered"):
        await nobody.refresh()
