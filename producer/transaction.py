"""A fenced MULTI/EXEC of native commands: how a tick reaches Redis (docs/REDIS.md, "How
the producer writes a tick").

Native commands in one transaction cost Redis about half the CPU of the same work done by
a Lua script (docs/PERFORMANCE.md, "Tick-write designs in Redis": 13-15 against 29-32 ms
per 10,000-ticker tick), the difference being Lua's overhead per ``redis.call``.

The fence: ``WATCH`` the lease key, ``GET`` it, and send the ``MULTI`` … ``EXEC`` only when
it holds our id. ``EXEC`` runs nothing when the lease key was modified or expired after the
``WATCH``, so a tick lands only if the lease was ours from the ``WATCH`` to the ``EXEC`` —
what a script that compares the owner first guaranteed. Our own renewal (a ``PEXPIRE`` of
the lease) between the two aborts the ``EXEC`` too; the lease is then read again under a new
``WATCH`` and the same transaction sent again (a renewal a second aborts at most one try).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection as Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from producer.commands import command
from producer.lease import LeaseLost

try:  # redis-py's hiredis parser, when in use, is read directly (see `_replies`)
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - redis-py moved it
    _AsyncHiredisParser = None  # type: ignore[assignment,misc]
    NOT_ENOUGH_DATA = object()

MULTI: Final[bytes] = hiredis.pack_command(("MULTI",))
EXEC: Final[bytes] = hiredis.pack_command(("EXEC",))
MAX_TRIES: Final[int] = 5  # aborted by our own renewals at most once a second each


class TransactionAborted(ResponseError):
    """EXEC ran nothing `MAX_TRIES` times though the lease stayed ours."""


class FencedWriter:
    """Sends ``MULTI`` … ``EXEC`` bodies fenced by the lease ``lease_key`` of ``owner_id``."""

    def __init__(self, redis: aioredis.Redis, lease_key: str, owner_id: str) -> None:
        self.redis = redis
        self.owner_id = owner_id.encode()
        self._watch = command("WATCH", lease_key) + command("GET", lease_key)

    async def send(self, body: bytes) -> Connection:
        """Check the lease under a WATCH and send ``body`` (a `wrap`-ped transaction) on a
        pooled connection; `receive` reads its reply. Raises `LeaseLost` when not ours."""
        pool = self.redis.connection_pool
        conn: Connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(self._watch)
            await conn.read_response()
            owner = await conn.read_response()
            if owner != self.owner_id:
                await conn.send_command("UNWATCH")
                await conn.read_response()
                await pool.release(conn)
                raise LeaseLost(f"the lease is no longer held by {self.owner_id.decode()}")
            await conn.send_packed_command(body)
        except LeaseLost:
            raise
        except BaseException:
            await conn.disconnect()
            await pool.release(conn)
            raise
        return conn

    async def receive(self, conn: Connection, count: int) -> list[Any] | None:
        """The EXEC results of a body of ``count`` commands sent on ``conn``; None when EXEC
        ran nothing (the lease key changed after the WATCH).

        A refused command is raised (`OutOfMemoryError` first: Redis refuses every queued
        command when out of memory, then EXEC). The connection goes back to the pool; one
        interrupted mid-reply is dropped first, and so is one to a replica (``-READONLY``: a
        primary demoted by a Sentinel failover), raised as a connection error: the replies
        are read past redis-py's ``read_response``, which would drop it itself, and a kept
        connection would refuse every tick (docs/REDIS.md, "Sentinel").
        """
        readonly = False
        try:
            replies = await _replies(conn, count + 2)  # +OK, +QUEUED per command, EXEC
            readonly = any(isinstance(r, ReadOnlyError) for r in replies)
            if readonly:
                await conn.disconnect()
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await self.redis.connection_pool.release(conn)
        if readonly:
            raise RedisConnectionError("Redis answered READONLY: the primary is a replica now")
        refused = [r for r in replies[1:] if isinstance(r, ResponseError)]
        if refused:
            raise next((e for e in refused if isinstance(e, OutOfMemoryError)), refused[0])
        results = replies[-1]
        if results is None:
            return None
        for result in results:
            if isinstance(result, ResponseError):
                raise result
        return list(results)

    async def write(self, body: bytes, count: int) -> list[Any]:
        """Send a `wrap`-ped body and return its results, sent again while our own
        renewals abort it."""
        return await self.land(await self.send(body), body, count)

    async def land(self, conn: Connection, body: bytes, count: int) -> list[Any]:
        """The results of ``body`` already sent on ``conn``, sending it again (under a new
        WATCH and lease check) when EXEC ran nothing."""
        for _ in range(MAX_TRIES):
            results = await self.receive(conn, count)
            if results is not None:
                return results
            conn = await self.send(body)
        await self.receive(conn, count)  # leave the connection clean
        raise TransactionAborted(f"EXEC aborted {MAX_TRIES + 1} times with the lease ours")


def wrap(commands: list[bytes]) -> bytes:
    """Packed ``commands`` as one transaction body."""
    return b"".join([MULTI, *commands, EXEC])


async def _replies(conn: Connection, count: int) -> list[Any]:
    """``count`` replies from ``conn``, error replies as exception objects.

    A tick's transaction has ~10,000 ``+QUEUED`` replies; redis-py's ``read_response``
    costs several µs per call, so with its hiredis parser the replies are taken from the
    parser's reader in one loop (the same reader and stream ``read_response`` uses).
    Anything else (another parser, a test double's connection) is read reply by reply.
    """
    parser = getattr(conn, "_parser", None)
    if (_AsyncHiredisParser is None or not isinstance(parser, _AsyncHiredisParser)
            or not isinstance(getattr(parser, "_stream", None), asyncio.StreamReader)):
        out: list[Any] = []
        for _ in range(count):
            try:
                out.append(await conn.read_response())
            except ResponseError as e:
                out.append(e)
        return out
    out = [await conn.read_response()]  # waits with the connection's own timeout
    reader: Any = parser._reader
    timeout = getattr(conn, "socket_timeout", None)
    async with asyncio.timeout(timeout):
        while len(out) < count:
            reply = reader.gets()
            while reply is NOT_ENOUGH_DATA:
                await parser.read_from_socket()  # type: ignore[no-untyped-call]
                reply = reader.gets()
            out.append(reply)
    return out
