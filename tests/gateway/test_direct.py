"""The direct path (gateway/stream/direct.py): the hub writes a parked stream's events to
its socket, and anything else goes through the stream's task, as before."""

from __future__ import annotations

import asyncio
import itertools
import socket

import httpx
import orjson
import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from bench.contract_publisher import ContractWriter
from gateway.cluster.hub import ClusterHub
from gateway.hub import Client, Hub
from gateway.positions import Vector
from gateway.stats import Stats
from gateway.stream.direct import DirectWriter
from shared.keys import Keys
from tests.gateway.test_hub import E1, item, tick
from tests.helpers.gateway import served
from tests.helpers.poll import wait_for, wait_until
from tests.helpers.sse import open_stream

STREAM = "/api/stream/prices"


@pytest.fixture
def producer(aredis, namespace) -> ContractWriter:
    return ContractWriter(aredis, Keys(namespace))


class Socket:
    """What the writer needs of a transport: what was written, and whether it is closing."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def events(self) -> list[tuple[str, dict[str, object]]]:
        """Each chunk unframed: ``(id, data)``; checks the chunk framing on the way."""
        out = []
        for chunk in self.chunks:
            size, _, rest = chunk.partition(b"\r\n")
            assert int(size, 16) == len(rest) - 2 and rest.endswith(b"\r\n")
            fields = dict(line.split(b": ", 1) for line in rest[:-2].strip().split(b"\r\n"))
            out.append((fields[b"id"].decode(), orjson.loads(fields[b"data"])))
        return out


def parked(hub: Hub, stats: Stats) -> tuple[Client, Socket, FlowControl]:
    """A client past its opening, parked in its hot loop with a direct writer."""
    client = hub.register(None)
    sock = Socket()
    flow = FlowControl(sock)  # type: ignore[arg-type]
    client.direct = DirectWriter(sock, flow, client, hub, stats)  # type: ignore[arg-type]
    client.take()
    client.wake.clear()
    client.parked = True
    return client, sock, flow


async def test_a_parked_stream_gets_each_tick_written_at_once_with_chained_ids():
    stats = Stats()
    hub = Hub(stats)
    hub.resync({}, E1, 0)
    client, sock, _ = parked(hub, stats)
    tick(hub, AAPL=1, MSFT=2)
    tick(hub, AAPL=3)
    assert [i for i, _ in sock.events()] == [f"{E1}-2-0", f"{E1}-3-2"]
    assert sock.events()[1][1] == {"AAPL": {"price": 1.0, "seq": 3}}
    assert client.pending is None and not client.wake.is_set()  # the task was not woken
    assert (client.last_pos, stats.events_sent, stats.events_direct) == (3, 2, 2)
    assert stats.updates_sent == 3
    # One frame for every client in the same place: the second writer sends the same bytes.
    other, other_sock, _ = parked(hub, stats)
    other.last_pos = client.last_pos
    tick(hub, MSFT=4)
    assert other_sock.chunks[-1] is sock.chunks[-1]


async def test_a_full_socket_or_a_woken_stream_leaves_the_tick_to_the_task():
    stats = Stats()
    hub = Hub(stats)
    hub.resync({}, E1, 0)
    client, sock, flow = parked(hub, stats)
    flow.pause_writing()  # past the transport's high-water mark
    tick(hub, AAPL=1)
    assert not sock.chunks and client.wake.is_set() and client.pending is not None
    flow.resume_writing()
    # Woken and not yet run: a newer tick must not overtake the pending one; it merges.
    tick(hub, AAPL=2, MSFT=3)
    assert not sock.chunks
    pending = client.take()
    assert pending is not None and pending.pos == 3
    assert pending.items == {"AAPL": item(2), "MSFT": item(3)}
    assert stats.conflated == 1 and stats.events_direct == 0
    # Not parked (the task is between its wake-up and its send): never written by the hub.
    client.wake.clear()
    client.parked = False
    tick(hub, AAPL=4)
    assert not sock.chunks and client.pending is not None
    # A closing socket declines as well.
    client.take()
    client.wake.clear()
    client.parked, sock.closing = True, True
    tick(hub, AAPL=5)
    assert not sock.chunks and client.pending is not None


async def test_on_a_cluster_a_stream_ahead_in_one_partition_takes_the_task_path():
    stats = Stats()
    hub = ClusterHub(stats, 2)
    hub.resync_partition(0, {}, E1, 0)
    hub.resync_partition(1, {}, E1, 0)
    client, sock, _ = parked(hub, stats)
    client.last_pos = Vector((0, 0))
    hub.publish_partitions([(0, {"A": item(1)}, 1)])
    assert [i.split("-", 1)[1] for i, _ in sock.events()] == ["1.0-0.0"]
    client.last_pos = Vector((1, 5))  # its opening read partition 1 further than the hub
    hub.publish_partitions([(0, {"A": item(2)}, 2)])
    assert len(sock.chunks) == 1 and client.pending is not None  # `_not_behind` in the task


@pytest.mark.parametrize("guarded", [True, False], ids=["our-protocol", "uvicorn-protocol"])
async def test_a_stream_reads_the_same_on_either_path(settings, producer, guarded):
    """Our server writes live events directly, uvicorn's through the task: a client sees
    the same events, ids and prices, and the counter tells which path carried them."""
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with served(settings, guarded) as (url, app), httpx.AsyncClient(base_url=url) as http:
        async with open_stream(http, STREAM) as sse:
            snapshot = await sse.event()
            seen = [snapshot.position]
            for step in range(1, 21):
                written = await producer.atick({"AAPL": 190.0 + step})
                event = await sse.event()
                assert event.json() == {"AAPL": written["AAPL"].to_dict()}
                seen.append(event.position)
        stats = app.state.gateway.stats
    assert all(now[2] == before[1] for before, now in itertools.pairwise(seen))
    assert len({epoch for epoch, _, _ in seen}) == 1
    assert stats.events_direct == (20 if guarded else 0)


async def test_a_reader_that_stalls_is_conflated_then_written_directly_again(settings, producer):
    """A client that stops reading fills its socket: the hub offers to its task (which
    waits for the socket, conflating); once it reads again, it gets the latest prices and
    then direct writes, its ids chained throughout."""
    tickers = [f"T{i:03d}" for i in range(300)]  # ~40 KB per event
    await producer.atick({t: 100.0 for t in tickers})
    async with served(settings) as (url, app):
        port = int(url.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        stats = app.state.gateway.stats
        hub = app.state.hub
        await wait_until(lambda: any(c.parked for c in hub.clients), what="the stream parked")
        client = next(iter(hub.clients))
        step = 0
        while stats.conflated == 0:  # until the socket is full and a tick merged
            step += 1
            written = await producer.atick({t: 100.0 + step for t in tickers})
            top = max(u.seq for u in written.values())
            await wait_until(lambda top=top: hub.pos >= top, what="the tick in the hub")
        direct_before = stats.events_direct
        last = await producer.atick({t: 999.0 for t in tickers})
        received = bytearray()
        final = b'"price":999.0'
        while received.count(final) < len(tickers):
            received += await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
        await wait_until(lambda: client.parked, what="parked again")
        await producer.atick({"T000": 1.0})
        while b'"price":1.0,' not in received:
            received += await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
        sock.close()
    assert stats.events_direct > direct_before  # the direct path resumed
    ids = [line.split(b": ")[1].decode() for line in received.split(b"\r\n")
           if line.startswith(b"id: ")]
    chain = [tuple(int(x) for x in i.split("-")[1:]) for i in ids]
    assert all(prev == before[0] for before, (_, prev) in itertools.pairwise(chain))
    assert chain[-2][0] == last["T299"].seq  # the stalled stream caught up on the latest


def _flushed_to_subscribers(sredis) -> bool:
    """Redis has written everything published to its subscribers' sockets (on loopback,
    it is then in their receive buffers)."""
    clients = sredis.client_list(_type="pubsub")
    return all(int(c["omem"]) == 0 and int(c["obl"]) == 0 for c in clients)


async def test_ticks_that_arrived_together_go_out_as_one_event_of_the_latest_prices(
        settings, producer, sredis, namespace):
    """A fan-out round longer than the tick interval must not put the gateway further
    behind with each tick: what arrived meanwhile goes out as one event."""
    await producer.atick({"AAPL": 190.0, "MSFT": 420.0})
    async with served(settings) as (url, app), httpx.AsyncClient(base_url=url) as http:
        async with open_stream(http, STREAM) as sse:
            snapshot = await sse.event()
            stats = app.state.gateway.stats
            ticks, conflated = stats.ticks, stats.conflated
            # The event loop is blocked meanwhile, as by a long round: all five arrive
            # before the gateway reads any of them.
            writer = ContractWriter(sredis, Keys(namespace))
            written = [writer.tick({"AAPL": 200.0 + step}) for step in range(5)]
            wait_for(lambda: _flushed_to_subscribers(sredis), what="the ticks delivered")
            event = await sse.event()
    last = written[-1]["AAPL"]
    assert event.json() == {"AAPL": last.to_dict()}
    assert event.position[1:] == (last.seq, snapshot.position[1])
    assert stats.ticks == ticks + 5
    assert stats.conflated == conflated + 4
