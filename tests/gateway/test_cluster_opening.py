"""Stream openings on a Cluster share their view reads (gateway/cluster/reads.py
`OpeningViews`), and every opening's read starts after it asked: no tick can fall between
an opening's registration in the hub and the view it is sent."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cluster import reads
from gateway.cluster.reads import OpeningViews


class Reads:
    """A stand-in for `read_cluster_view`: each read waits until the test releases it."""

    def __init__(self) -> None:
        self.started: list[asyncio.Future[str]] = []

    async def __call__(self, clients: object) -> str:
        self.started.append(asyncio.get_running_loop().create_future())
        return await self.started[-1]


async def settle() -> None:
    """Let every task that can run, run (a few zero-time passes of the loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Reads:
    fake = Reads()
    monkeypatch.setattr(reads, "read_cluster_view", fake)
    return fake


async def test_openings_during_a_read_share_the_next_one_which_starts_after_them(fake):
    views = OpeningViews(object())  # type: ignore[arg-type]
    first = asyncio.create_task(views.read())
    await settle()
    assert len(fake.started) == 1
    later = [asyncio.create_task(views.read()) for _ in range(50)]
    await settle()
    assert len(fake.started) == 1  # not a read each, and not the one already running
    fake.started[0].set_result("view 1")
    assert await first == "view 1"
    await settle()
    assert len(fake.started) == 2  # theirs started only once the first had ended
    fake.started[1].set_result("view 2")
    assert await asyncio.gather(*later) == ["view 2"] * 50


async def test_a_cancelled_opening_does_not_cancel_the_others_and_errors_reach_all(fake):
    views = OpeningViews(object())  # type: ignore[arg-type]
    first = asyncio.create_task(views.read())
    await settle()
    leaving, staying = asyncio.create_task(views.read()), asyncio.create_task(views.read())
    await settle()
    leaving.cancel()  # its client left while it waited
    await settle()
    fake.started[0].set_result("view 1")
    assert await first == "view 1"
    await settle()
    assert len(fake.started) == 2  # the next read still runs for the one that stayed
    fake.started[1].set_result("view 2")
    assert await staying == "view 2" and leaving.cancelled()
    blocker = asyncio.create_task(views.read())  # a read in flight: the next two share one
    await settle()
    failing = [asyncio.create_task(views.read()) for _ in range(2)]
    await settle()
    fake.started[2].set_result("view 3")
    assert await blocker == "view 3"
    await settle()
    fake.started[3].set_exception(ConnectionError("node gone"))
    for task in failing:
        with pytest.raises(ConnectionError):
            await task
