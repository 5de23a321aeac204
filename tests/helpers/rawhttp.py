"""Raw-socket HTTP for the abuse scenarios: what no well-behaved client library sends.

Shared by the gateway's own defences (test_http_layer.py) and the nginx config in front
of it (test_proxy.py), so both face exactly the same attacks.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

MIB = 1 << 20


def connect(port: int, timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, limit: int = 64 * 1024) -> bytes:
    """Everything the peer sends until it closes (or resets) the connection."""
    data = b""
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def status_of(answer: bytes) -> int:
    """The status code of a raw response; 0 when the peer answered nothing."""
    if not answer.startswith(b"HTTP/"):
        return 0
    return int(answer.split(b" ", 2)[1])


def header_bomb(port: int, host: str = "localhost", lines: int = 100) -> tuple[int, bytes]:
    """Send ``lines`` header lines of 1 MiB and never end the header block; the answer."""
    sock = connect(port)
    try:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for i in range(lines):
                sock.sendall(b"X-Pad-%d: " % i + b"a" * MIB + b"\r\n")
        answer = read_all(sock)
        return status_of(answer), answer
    finally:
        sock.close()


# The three half-sent requests the attack held open: partial headers, a chunked body that
# never ends, and a body shorter than its Content-Length.
HALF_SENT = {
    "partial headers": b"GET /api/prices HTTP/1.1\r\nHost: {host}\r\nX-Slow: a",
    "endless chunked body": (
        b"POST /api/watchlist HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"),
    "short body": (
        b"POST /api/watchlist HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4000\r\n\r\n{\"ti"),
}


@dataclass
class HalfSent:
    kind: str
    sock: socket.socket
    answer: bytes = b""
    closed_after_s: float = 0.0


@contextlib.contextmanager
def half_sent(port: int, per_kind: int, host: str = "localhost") -> Iterator[list[HalfSent]]:
    """``per_kind`` sockets of each `HALF_SENT` kind, opened now; closed at exit."""
    opened: list[HalfSent] = []
    try:
        for kind, template in HALF_SENT.items():
            for _ in range(per_kind):
                sock = connect(port, timeout_s=60)
                sock.sendall(template.replace(b"{host}", host.encode()))
                opened.append(HalfSent(kind, sock))
        yield opened
    finally:
        for item in opened:
            item.sock.close()


def wait_closed(items: list[HalfSent], started: float) -> None:
    """Read each socket until the peer closes it; note when and what it answered."""
    for item in items:
        item.answer = read_all(item.sock)
        item.closed_after_s = time.monotonic() - started


def request(port: int, raw: bytes, timeout_s: float = 10.0) -> bytes:
    """Send one raw request (``Connection: close`` in it) and read the whole answer."""
    with connect(port, timeout_s) as sock:
        sock.sendall(raw)
        return read_all(sock, limit=1 << 24)


def head_and_first_frames(port: int, raw: bytes, frames: int, timeout_s: float = 10.0) -> bytes:
    """Send a stream request; read until the headers and ``frames`` SSE frames arrived."""
    with connect(port, timeout_s) as sock:
        sock.sendall(raw)
        data = b""
        deadline = time.monotonic() + timeout_s
        while True:
            _, sep, body = data.partition(b"\r\n\r\n")
            if sep and body.count(b"\r\n\r\n") >= frames:
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"no {frames} frames within {timeout_s}s: {data[:300]!r}")
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed early: {data[:300]!r}")
            data += chunk
