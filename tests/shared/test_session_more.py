"""`shared.redisio.subscription` tells a consumer that fell behind what has already
arrived (``Message.more``), so it can merge it before acting (the gateway does)."""

from __future__ import annotations

import contextlib

import pytest

from shared.redisio import Snapshot, subscription
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.integration


async def _snapshot() -> str:
    return "snapshot"


def _delivered(sredis) -> bool:
    return all(int(c["omem"]) == 0 and int(c["obl"]) == 0
               for c in sredis.client_list(_type="pubsub"))


async def test_more_tells_which_messages_of_a_channel_had_already_arrived(
        aredis, sredis, namespace):
    prices, other = f"{namespace}:prices", f"{namespace}:other"
    events = subscription(aredis, (prices, other), _snapshot, poll_s=0.1)
    async with contextlib.aclosing(events):
        assert await anext(events) == Snapshot("snapshot")
        # Published while the consumer is busy (this test, synchronously): all arrive at once.
        for data in (b"1", b"2", b"3"):
            sredis.publish(prices, data)
        sredis.publish(other, b"x")
        sredis.publish(prices, b"4")
        wait_for(lambda: _delivered(sredis), what="delivery")
        got = [await anext(events) for _ in range(5)]
        assert [(m.data, m.more) for m in got] == [
            (b"1", True), (b"2", True), (b"3", False),  # the next is on another channel
            (b"x", False), (b"4", False)]
        sredis.publish(prices, b"5")  # alone: nothing else has arrived
        assert (await anext(events)).more is False
