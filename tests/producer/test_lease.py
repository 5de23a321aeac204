"""The producer lease against fakeredis: one owner, renewal only while ours, release."""

from __future__ import annotations

import orjson

from producer.lease import Lease
from shared.keys import Keys

KEYS = Keys("lease")


async def test_only_one_owner_at_a_time(fake_redis) -> None:
    first, second = Lease(fake_redis, KEYS, "a"), Lease(fake_redis, KEYS, "b")
    assert await first.acquire()
    assert await first.acquire()  # already ours
    assert not await second.acquire()
    assert 0 < await fake_redis.pttl(KEYS.lease) <= first.ttl_ms


async def test_renew_extends_and_writes_the_status_only_while_ours(fake_redis) -> None:
    first, second = Lease(fake_redis, KEYS, "a"), Lease(fake_redis, KEYS, "b")
    await first.acquire()
    status = {"id": "a", "source": "simulator", "state": "ok", "tick_interval_s": 0.5}
    assert await first.renew(status)
    assert orjson.loads(await fake_redis.get(KEYS.producer_status)) == status
    assert 0 < await fake_redis.pttl(KEYS.producer_status) <= first.ttl_ms
    assert not await second.renew({**status, "id": "b"})
    assert orjson.loads(await fake_redis.get(KEYS.producer_status))["id"] == "a"


async def test_an_expired_lease_is_not_renewed(fake_redis) -> None:
    lease = Lease(fake_redis, KEYS, "a")
    await lease.acquire()
    await fake_redis.delete(KEYS.lease)  # expired
    assert not await lease.renew({})


async def test_release_frees_the_lease_for_a_standby(fake_redis) -> None:
    first, second = Lease(fake_redis, KEYS, "a"), Lease(fake_redis, KEYS, "b")
    await first.acquire()
    assert not await second.release()  # not ours: nothing happens
    assert await fake_redis.get(KEYS.lease) == b"a"
    assert await first.release()
    assert await second.acquire()


async def test_the_heartbeat_is_written_only_when_asked_and_released_with_the_lease(
    fake_redis,
) -> None:
    lease = Lease(fake_redis, KEYS, "a")
    await lease.acquire()
    assert await lease.renew({"state": "starting"}, heartbeat=False)
    assert await fake_redis.get(KEYS.producer) is None  # holding the lease is not producing
    assert await fake_redis.get(KEYS.producer_status) is not None
    assert await lease.renew({"state": "ok"}, heartbeat=True)
    assert await fake_redis.get(KEYS.producer) == b"a"
    assert 0 < await fake_redis.pttl(KEYS.producer) <= lease.ttl_ms
    assert await lease.release()
    assert await fake_redis.exists(KEYS.lease, KEYS.producer, KEYS.producer_status) == 0
