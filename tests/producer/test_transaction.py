"""The fenced MULTI/EXEC a tick is written by, against a real redis-server: the lease is
checked under a WATCH, a change of the lease between the WATCH and the EXEC writes nothing,
our own renewal there costs a resend and no tick, and Redis's refusals are raised."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection as Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from producer.commands import command
from producer.lease import LeaseLost
from producer.transaction import FencedWriter, TransactionAborted, wrap
from shared.keys import Keys
from shared.redisio import connect
from shared.settings import Settings
from tests.helpers.poll import wait_until

OWNER = "me"


class Between(FencedWriter):
    """Runs ``meanwhile`` between the WATCH and the transaction on the first ``times`` sends,
    as a renewal or a takeover landing in that window would."""

    def __init__(self, redis: aioredis.Redis, lease: str,
                 meanwhile: Callable[[], Awaitable[object]], times: int = 1) -> None:
        super().__init__(redis, lease, OWNER)
        self.meanwhile, self.times, self.sends = meanwhile, times, 0

    async def send(self, body: bytes) -> Connection:
        self.sends += 1
        conn = await super().send(b"")  # WATCH and the lease check only
        if self.sends <= self.times:
            await self.meanwhile()
        await conn.send_packed_command(body)
        return conn


@pytest.fixture
async def keys(aredis: aioredis.Redis, namespace: str) -> Keys:
    keys = Keys(namespace)
    await aredis.set(keys.lease, OWNER, px=3000)
    return keys


def body(keys: Keys) -> bytes:
    return wrap([command("HSET", keys.latest, "AAPL", "1"), command("PUBLISH", keys.prices, "x")])


async def test_a_transaction_lands_while_the_lease_is_ours(aredis, keys) -> None:
    writer = FencedWriter(aredis, keys.lease, OWNER)
    assert await writer.write(body(keys), 2) == [1, 0]
    assert await aredis.hget(keys.latest, "AAPL") == b"1"


async def test_a_lease_not_ours_writes_nothing(aredis, keys) -> None:
    await aredis.set(keys.lease, "other")
    with pytest.raises(LeaseLost):
        await FencedWriter(aredis, keys.lease, OWNER).write(body(keys), 2)
    assert not await aredis.exists(keys.latest)
    assert await aredis.hset(keys.latest, "x", "1") == 1  # the pool's connection is clean


async def test_a_takeover_between_the_check_and_exec_writes_nothing(aredis, keys) -> None:
    writer = Between(aredis, keys.lease, lambda: aredis.set(keys.lease, "other"))
    with pytest.raises(LeaseLost):
        await writer.write(body(keys), 2)
    assert writer.sends == 2 and not await aredis.exists(keys.latest)


async def test_an_expiry_between_the_check_and_exec_writes_nothing(aredis, keys) -> None:
    writer = Between(aredis, keys.lease, lambda: aredis.delete(keys.lease))
    with pytest.raises(LeaseLost):
        await writer.write(body(keys), 2)
    assert not await aredis.exists(keys.latest)


async def test_our_own_renewal_in_between_costs_a_resend_not_the_tick(aredis, keys) -> None:
    writer = Between(aredis, keys.lease, lambda: aredis.pexpire(keys.lease, 3000))
    assert await writer.write(body(keys), 2) == [1, 0]
    assert writer.sends == 2 and await aredis.hget(keys.latest, "AAPL") == b"1"


async def test_renewals_that_never_stop_aborting_end_in_an_error(aredis, keys) -> None:
    writer = Between(aredis, keys.lease, lambda: aredis.pexpire(keys.lease, 3000), times=99)
    with pytest.raises(TransactionAborted):
        await writer.write(body(keys), 2)
    assert not await aredis.exists(keys.latest)
    assert await aredis.hset(keys.latest, "x", "1") == 1


async def test_a_refused_command_is_raised(aredis, keys) -> None:
    await aredis.set(keys.epoch, "not a hash")
    bad = wrap([command("HSET", keys.epoch, "a", "1"), command("HSET", keys.latest, "b", "1")])
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await FencedWriter(aredis, keys.lease, OWNER).write(bad, 2)


async def test_a_replica_answering_readonly_drops_the_connection(redis_server_factory,
                                                                  namespace) -> None:
    # A primary demoted by a Sentinel failover answers -READONLY: the replies are read past
    # redis-py's read_response (which would drop the connection itself), so the writer
    # must drop it, or the pool would hand the same replica out for every tick.
    primary = redis_server_factory("--repl-diskless-sync-delay", "0")  # sync at once
    replica = redis_server_factory("--replicaof", "127.0.0.1", str(primary.port))
    keys = Keys(namespace)
    primary.client().set(keys.lease, OWNER, px=30_000)
    await wait_until(lambda: replica.client().get(keys.lease) == OWNER.encode(), 10,
                     "the lease replicated")
    client = connect(Settings(redis_url=replica.url))
    try:
        with pytest.raises(RedisConnectionError, match="READONLY"):
            await FencedWriter(client, keys.lease, OWNER).write(body(keys), 2)
        pool = client.connection_pool
        assert not pool._in_use_connections
        assert not any(c.is_connected for c in pool._available_connections)
    finally:
        await client.aclose()
    assert primary.client().hget(keys.latest, "AAPL") is None
