"""redis-py's connection classes with a send that cannot lose a cancel.

redis-py sends every command under ``asyncio.wait_for(send, socket_timeout)`` when the
client has a socket timeout (its default is 5 s). On Python 3.11, ``wait_for`` returns
the inner result when the task is cancelled after the send finished but before
``wait_for`` resumed, and the cancel is gone (CPython gh-86296, fixed in 3.12 by
rewriting ``wait_for`` on ``asyncio.timeout``). Measured on 3.11.7 with redis-py 8.1:
cancelling a task that loops on GET against a local Redis, 6 of 50 cancels were
ignored; with no socket timeout, 0 of 50. A supervised task that ignores its cancel is
awaited for ever at shutdown (the gateway did not exit after SIGTERM under load).

These classes send under ``asyncio.timeout`` instead, which counts cancels and re-raises
an outside cancel that meets its own deadline. The builder in `shared.redisio.clients`
puts them in every pool it makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


async def _send(conn: Any, command: bytes | str | Iterable[bytes], check_health: bool,
                sentinel: bool = False) -> None:
    """redis-py 8.1's ``send_packed_command`` with ``asyncio.timeout`` for ``wait_for``:
    the same connect, health check, errors and disconnects. A Sentinel-managed connection
    connects through its own ``connect``, which asks the sentinels for the primary's
    address first (``connect_check_health`` would dial whatever address it last had)."""
    if not conn.is_connected:
        connect = None if sentinel else getattr(conn, "connect_check_health", None)
        await (connect(check_health=False) if connect is not None else conn.connect())
    if check_health:
        await conn.check_health()
    try:
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        async with asyncio.timeout(conn.socket_timeout or None):
            conn._writer.writelines(command)
            await conn._writer.drain()
    except TimeoutError:  # before OSError: on 3.11 TimeoutError is one
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as e:
        await conn.disconnect(nowait=True)
        err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else e.args[:2]
        raise RedisConnectionError(
            f"Error {err_no} while writing to socket. {errmsg}.") from e
    except BaseException:
        # A send cut short (a cancel) leaves a partial command on the socket.
        await conn.disconnect(nowait=True)
        raise


class CancelSafeConnection(Connection):
    """A TCP connection whose send keeps a cancel (module docstring)."""

    async def send_packed_command(self, command: bytes | str | Iterable[bytes],
                                  check_health: bool = True) -> None:
        await _send(self, command, check_health)


class CancelSafeSSLConnection(SSLConnection):
    """A TLS connection whose send keeps a cancel (module docstring)."""

    async def send_packed_command(self, command: bytes | str | Iterable[bytes],
                                  check_health: bool = True) -> None:
        await _send(self, command, check_health)


class CancelSafeUnixConnection(UnixDomainSocketConnection):
    """A Unix socket connection whose send keeps a cancel (module docstring)."""

    async def send_packed_command(self, command: bytes | str | Iterable[bytes],
                                  check_health: bool = True) -> None:
        await _send(self, command, check_health)


class CancelSafeSentinelConnection(SentinelManagedConnection):
    """A connection to the primary a Sentinel pool found, whose send keeps a cancel
    (module docstring). redis-py's READONLY handling (drop the connection, so the next
    one asks the sentinels again) is kept: it is in ``read_response``."""

    async def send_packed_command(self, command: bytes | str | Iterable[bytes],
                                  check_health: bool = True) -> None:
        await _send(self, command, check_health, sentinel=True)


class CancelSafeSentinelSSLConnection(CancelSafeSentinelConnection, SSLConnection):
    """The TLS twin of `CancelSafeSentinelConnection` (as redis-py builds its own)."""


CANCEL_SAFE: Final[dict[type[AbstractConnection], type[AbstractConnection]]] = {
    Connection: CancelSafeConnection,
    SSLConnection: CancelSafeSSLConnection,
    UnixDomainSocketConnection: CancelSafeUnixConnection,
    SentinelManagedConnection: CancelSafeSentinelConnection,
    SentinelManagedSSLConnection: CancelSafeSentinelSSLConnection,
}
