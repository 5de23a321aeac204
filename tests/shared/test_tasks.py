"""Stopping tasks for sure: a swallowed cancellation is cancelled again; a task that never
stops is given up on after the deadline with one log line."""

from __future__ import annotations

import asyncio
import logging

from shared.tasks import Supervisor, race, stop_tasks


async def swallows_one_cancel() -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass  # what a lost race inside a client library looks like
    await asyncio.sleep(10)


async def ignores_cancels(until: asyncio.Event) -> None:
    while not until.is_set():
        try:
            await until.wait()
        except asyncio.CancelledError:
            continue


async def test_a_swallowed_cancel_is_repeated() -> None:
    task = asyncio.create_task(swallows_one_cancel())
    await asyncio.sleep(0)
    await stop_tasks([task], timeout_s=1.0)
    assert task.cancelled()


async def test_gives_up_after_the_deadline_and_says_so(caplog) -> None:
    caplog.set_level(logging.WARNING)
    release = asyncio.Event()
    task = asyncio.create_task(ignores_cancels(release), name="stubborn")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await stop_tasks([task], timeout_s=0.2)
    assert loop.time() - started < 0.5
    assert "stubborn" in caplog.text
    release.set()  # the test's own cleanup of the stubborn task
    await task


async def test_supervisor_exit_survives_a_swallowed_cancel() -> None:
    async with Supervisor() as supervisor:
        supervisor.start("swallower", swallows_one_cancel)
        await asyncio.sleep(0)
    assert supervisor.running == 0


async def test_race_reraises_the_first_error_and_stops_the_rest() -> None:
    async def fails() -> None:
        raise ValueError("first")

    slow = asyncio.ensure_future(asyncio.sleep(10))
    try:
        await race(fails(), slow)
    except ValueError as e:
        assert str(e) == "first"
    else:
        raise AssertionError("race swallowed the error")
    assert slow.cancelled()
