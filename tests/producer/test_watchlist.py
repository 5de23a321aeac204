"""Watchlist following against fakeredis: load, control messages, resync, cap."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from producer.watchlist import Watchlist
from shared.codec import encode_control
from shared.keys import Keys

KEYS = Keys("wl")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def add(self, ticker: str) -> None:
        self.calls.append(("add", ticker))

    async def remove(self, ticker: str) -> None:
        self.calls.append(("remove", ticker))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def watchlist(redis: aioredis.Redis, recorder: Recorder, cap: int = 5) -> Watchlist:
    return Watchlist(redis, KEYS, ("AAPL", "MSFT"), cap, recorder.add, recorder.remove)


async def members(redis: aioredis.Redis) -> set[str]:
    return {m.decode() for m in await redis.smembers(KEYS.watchlist)}


async def test_an_empty_set_is_filled_with_the_defaults(fake_redis, recorder) -> None:
    assert await watchlist(fake_redis, recorder).load() == ["AAPL", "MSFT"]
    assert await members(fake_redis) == {"AAPL", "MSFT"}


async def test_an_empty_set_is_filled_from_the_last_term(fake_redis, recorder) -> None:
    assert await watchlist(fake_redis, recorder).load(fallback=["NVDA"]) == ["NVDA"]
    assert await members(fake_redis) == {"NVDA"}


async def test_the_set_wins_and_bad_members_are_ignored(fake_redis, recorder, caplog) -> None:
    await fake_redis.sadd(KEYS.watchlist, "TSLA", "V", "bad symbol", "x")
    wl = watchlist(fake_redis, recorder)
    assert await wl.load() == ["TSLA", "V"]
    await wl.resync()
    assert len([r for r in caplog.records if "invalid symbol" in r.getMessage()]) == 2


async def test_the_watchlist_is_capped(fake_redis, recorder, caplog) -> None:
    caplog.set_level(logging.WARNING)
    await fake_redis.sadd(KEYS.watchlist, *[f"T{i}" for i in range(8)])
    wl = watchlist(fake_redis, recorder, cap=5)
    assert len(await wl.load()) == 5
    await wl.apply(encode_control("add", "ZZZ"))
    assert "ZZZ" not in wl.current and recorder.calls == []
    assert any("cap" in r.getMessage() for r in caplog.records)


async def test_control_messages_apply_at_once(fake_redis, recorder) -> None:
    wl = watchlist(fake_redis, recorder)
    await wl.load()
    await wl.apply(encode_control("add", "PYPL"))
    await wl.apply(encode_control("add", "PYPL"))  # twice is once
    await wl.apply(encode_control("remove", "AAPL"))
    await wl.apply(encode_control("remove", "NOPE"))
    assert recorder.calls == [("add", "PYPL"), ("remove", "AAPL")]
    assert list(wl.current) == ["MSFT", "PYPL"]


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"action": "drop", "ticker": "AAPL"}', b'{"action": "add"}',
     b'{"action": "add", "ticker": "bad symbol"}', b"[]", b"x" * 5000],
)
async def test_a_malformed_control_message_is_logged_and_ignored(
    fake_redis, recorder, caplog, payload
) -> None:
    caplog.set_level(logging.WARNING)
    wl = watchlist(fake_redis, recorder)
    await wl.load()
    await wl.apply(payload)
    assert recorder.calls == []
    assert len([r for r in caplog.records if "malformed control" in r.getMessage()]) == 1


async def test_resync_heals_missed_messages(fake_redis, recorder) -> None:
    wl = watchlist(fake_redis, recorder)
    await wl.load()
    await fake_redis.srem(KEYS.watchlist, "AAPL")
    await fake_redis.sadd(KEYS.watchlist, "JPM")
    await wl.resync()
    assert recorder.calls == [("remove", "AAPL"), ("add", "JPM")]
    assert set(wl.current) == {"MSFT", "JPM"}
