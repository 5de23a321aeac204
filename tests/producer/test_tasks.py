"""Stopping tasks for sure: a swallowed cancellation is cancelled again; a task that never
stops is given up on after the deadline with one log line."""

from __future__ import annotations

import asyncio
import logging

from producer.tasks import stop_tasks


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
