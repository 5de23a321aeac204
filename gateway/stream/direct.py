"""The direct path: the hub writes a live stream's next event to its socket itself.

Through its task, one event costs a stream the wake-up of that task, a pass of the
generator (`gateway.stream.events`), the response's send and uvicorn's ``send`` (ASGI
message, chunked framing, flow control): about half of the gateway's CPU per event in
the profile of docs/PERFORMANCE.md. When a stream is parked in its hot loop with nothing
pending, none of that does anything the hub could not: the next event is the hub's
batch, framed once and shared (`framing.price_chunk`), and writing it is one
``transport.write``. So the hub calls `DirectWriter` for such a stream, and everything
else still goes through the task, which keeps each rule where it is:

- a socket whose buffer is past its high-water mark is not written to: the batch is
  offered as before, so the task sends it, waiting for the socket, under the send
  timeout, and what comes meanwhile is conflated;
- a stream that is woken (a resync, a reset, notices, bars, a ping, its end) or has
  anything pending is not parked, so nothing can overtake what it has to send;
- capped streams (``max_hz``), delayed ones, HTTP/1.0 and servers without the
  `STREAM_SOCKET` extension never park, and take the task path every time.

Ids are the same: each write stamps the client's last position and last send, as the
task would (README "Resume and continuity"; pings are due on ``last_sent``).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.flow_control import FlowControl

from gateway.hub import Changes, Client, Hub
from gateway.positions import Vector, join
from gateway.stats import Stats
from gateway.stream.framing import price_chunk


class DirectWriter:
    """`Client.direct` for a stream whose connection exposes its socket."""

    __slots__ = ("_client", "_flow", "_hub", "_loop", "_stats", "_transport")

    def __init__(self, transport: asyncio.Transport, flow: FlowControl, client: Client,
                 hub: Hub, stats: Stats) -> None:
        self._transport, self._flow = transport, flow
        self._client, self._hub, self._stats = client, hub, stats
        self._loop = asyncio.get_running_loop()

    def __call__(self, batch: Changes) -> bool:
        """Write ``batch`` now; False (nothing written) when the task must send it."""
        if self._flow.write_paused or self._transport.is_closing():
            return False
        client = self._client
        last = client.last_pos
        if isinstance(batch.pos, Vector) and join(batch.pos, last) != batch.pos:
            return False  # an opening read further on a Cluster: `events._not_behind`
        self._transport.write(price_chunk(batch, self._hub.epoch, last))
        client.last_pos = batch.pos
        client.last_sent = self._loop.time()
        stats = self._stats
        stats.events_sent += 1
        stats.events_direct += 1
        stats.updates_sent += len(batch.items)
        return True
