"""The gateway's lean events (gateway/waiting.py) behave as `asyncio.Event` where a stream
relies on it, without the waiter deque an idle stream paid for."""

from __future__ import annotations

import asyncio

import pytest

from gateway.waiting import LeanEvent, Wakeup


@pytest.mark.parametrize("make", [Wakeup, LeanEvent, asyncio.Event])
async def test_wait_returns_at_once_when_set_and_wakes_when_set_later(make):
    event = make()
    assert not event.is_set()
    waiter = asyncio.create_task(event.wait())
    await asyncio.sleep(0)  # the waiter is parked
    assert not waiter.done()
    event.set()
    assert await waiter is True
    assert event.is_set() and await event.wait() is True
    event.clear()
    assert not event.is_set()
    waiter = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    event.set()
    event.clear()  # set then cleared before the waiter ran: it still wakes, as asyncio's
    assert await waiter is True


@pytest.mark.parametrize("make", [Wakeup, LeanEvent])
async def test_a_cancelled_waiter_leaves_nothing_waiting(make):
    event = make()
    waiter = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    again = asyncio.create_task(event.wait())  # a Wakeup takes a new waiter
    await asyncio.sleep(0)
    event.set()
    assert await again is True


async def test_a_wakeup_refuses_a_second_waiter():
    wakeup = Wakeup()
    first = asyncio.create_task(wakeup.wait())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one waiter"):
        await wakeup.wait()
    wakeup.set()
    await first


async def test_a_lean_event_wakes_every_waiter_and_holds_no_deque_when_none_waits():
    event = LeanEvent()
    assert event._waiters is None
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert len(event._waiters) == 3 and "waiters:3" in repr(event)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert event._waiters is None
