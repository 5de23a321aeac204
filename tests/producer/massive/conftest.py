"""Fixtures of the Massive suite: local fake servers, a recording sink, and a guard that
the API key never shows up in anything a test captured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest

from producer.sources.base import Quote
from tests.helpers.massive import API_KEY, FakeMassiveHTTP, FakeMassiveWS


@pytest.fixture(autouse=True)
def key_never_shown(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
    """Every log record (at DEBUG, so nothing is filtered away) and all output of the test."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capfd.readouterr()
    formatter = logging.Formatter("%(name)s %(message)s")
    records = [r for when in ("setup", "call") for r in caplog.get_records(when)]
    logs = "\n".join(formatter.format(r) for r in [*records, *caplog.records])
    for where, text in (("stdout", out), ("stderr", err), ("the logs", logs)):
        assert API_KEY not in text, f"the API key leaked into {where}"


@pytest.fixture
def massive_http() -> Iterator[FakeMassiveHTTP]:
    server = FakeMassiveHTTP().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def massive_ws() -> AsyncIterator[FakeMassiveWS]:
    server = await FakeMassiveWS().start()
    try:
        yield server
    finally:
        await server.close()


class Batches:
    """A QuoteSink recording every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Quote]] = []
        self._changed = asyncio.Condition()

    async def __call__(self, batch: Mapping[str, Quote]) -> None:
        async with self._changed:
            self.batches.append(dict(batch))
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[dict[str, Quote]]], bool],
                       timeout_s: float = 5.0) -> list[dict[str, Quote]]:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.batches)), timeout_s)
            return list(self.batches)

    def tickers(self) -> set[str]:
        return {t for batch in self.batches for t in batch}


@pytest.fixture
def batches() -> Batches:
    return Batches()


def lines(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    """The messages of the captured records at ``level`` that contain ``text``."""
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and text in r.getMessage()]
