"""A small SSE reader for tests: one block (up to a blank line) at a time, with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Block:
    """One SSE block as the wire gave it."""

    id: str | None = None
    event: str | None = None  # the event type; None for the default ("message")
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        assert self.data is not None, "block has no data"
        return orjson.loads(self.data)

    @property
    def position(self) -> tuple[str, int, int]:
        """``(epoch, position, previous position)`` of the event's id."""
        assert self.id is not None, "block has no id"
        epoch, pos, prev = self.id.split("-")
        return epoch, int(pos), int(prev)


class _Parser:
    """Lines in, blocks out: the one place tests parse the SSE wire format."""

    def __init__(self) -> None:
        self.block = Block()

    def feed(self, line: str) -> Block | None:
        """The block a blank line ends, else None."""
        if line == "":
            done, self.block = self.block, Block()
            return done
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        out = self.block
        if name == "":
            out.comments.append(value)
        elif name == "id":
            out.id = value
        elif name == "event":
            out.event = value
        elif name == "data":
            out.data = value if out.data is None else out.data + "\n" + value
        elif name == "retry":
            out.retry = int(value)
        return None


def events(response: httpx.Response) -> Iterator[Block]:
    """The data events of a sync streaming response, each as soon as it is complete."""
    parser = _Parser()
    for line in response.iter_lines():
        block = parser.feed(line)
        if block is not None and block.data is not None:
            yield block


class SSEReader:
    """Reads blocks from an asyncio streaming httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self._parser = _Parser()

    async def block(self, timeout_s: float = 5.0) -> Block:
        """The next block (data event, retry line or comment ping)."""
        async with asyncio.timeout(timeout_s):
            async for line in self._lines:
                block = self._parser.feed(line)
                if block is not None:
                    return block
            raise EOFError("stream ended")

    async def event(self, timeout_s: float = 5.0) -> Block:
        """The next block that carries data (skipping retry lines and pings)."""
        async with asyncio.timeout(timeout_s):
            while True:
                block = await self.block(timeout_s)
                if block.data is not None:
                    return block

    async def updates_until(self, predicate, timeout_s: float = 5.0) -> list[Block]:
        """Data events until ``predicate(block)`` holds for one; all of them, in order."""
        seen: list[Block] = []
        async with asyncio.timeout(timeout_s):
            while True:
                block = await self.event(timeout_s)
                seen.append(block)
                if predicate(block):
                    return seen


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, url: str, params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[SSEReader]:
    """GET an SSE stream; asserts 200 and text/event-stream."""
    async with client.stream("GET", url, params=params, headers=headers) as response:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        # Held here: a reader dropped by the caller would have its line iterator
        # finalised by the garbage collector, which closes the connection under us.
        reader = SSEReader(response)
        yield reader
