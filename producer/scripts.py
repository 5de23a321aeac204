"""The Lua scripts of the publisher and a fast way to call them with many arguments.

A tick of 10,000 tickers is one EVALSHA with ~20,000 arguments. redis-py's asyncio client
packs arguments in Python (~15 ms for such a call, measured); hiredis packs them in C, so
we pack with hiredis and send the packed bytes on a pooled connection ourselves.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection as Connection
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from shared.errors import PricefeedError

# KEYS: seq. ARGV: count, floor. Reserves `count` numbers above both the stored value and
# `floor` (the highest seq this process handed out, so a Redis that lost its data cannot
# hand the same numbers out again); returns the last one reserved.
RESERVE_SEQ: Final[str] = """
local n = tonumber(ARGV[1])
local last = redis.call('INCRBY', KEYS[1], n)
local floor = tonumber(ARGV[2])
if last < floor + n then
  last = floor + n
  redis.call('SET', KEYS[1], string.format('%d', last))
end
return last
"""

# The cheapest script: run before each term to learn whether this Redis runs scripts.
PROBE: Final[str] = "return 1"

# KEYS: lease, latest. ARGV: owner id, channel prefix, map channel, tick map, number of
# published pairs, then ticker/payload pairs (the published ones first, then cache-only
# ones). Checks the lease, writes the cache, then publishes: one atomic unit (issue 2,
# point 5). HSET takes 2,000 pairs at a time to stay under Lua's unpack() stack limit.
# The tick map comes ready-made: building it in Lua costs Redis ~15 ms per 10,000 tickers,
# receiving it ~3 ms (measured).
PUBLISH_TICK: Final[str] = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = #ARGV
for i = 6, n, 4000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 3999, n)))
end
local last = 5 + 2 * tonumber(ARGV[5])
if last < 6 then return 1 end
local prefix = ARGV[2]
for i = 6, last, 2 do
  redis.call('PUBLISH', prefix .. ARGV[i], ARGV[i + 1])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


class ScriptingRefused(PricefeedError):
    """This Redis refuses EVALSHA/EVAL (renamed or forbidden); the producer cannot work."""


def refuses_scripting(error: ResponseError) -> bool:
    """True when ``error`` says the command itself is refused (renamed away by
    ``rename-command``, or not allowed by an ACL), rather than the script failing."""
    return isinstance(error, NoPermissionError) or str(error).startswith("unknown command")


async def check_scripting(redis: aioredis.Redis) -> None:
    """Raise `ScriptingRefused` unless this Redis runs a script by EVALSHA."""
    try:
        await Script(redis, PROBE)([], [])
    except ResponseError as e:
        if refuses_scripting(e):
            raise ScriptingRefused(
                f"this Redis refuses EVALSHA/EVAL: scripting is required ({e})"
            ) from e
        raise


class Script:
    """A Lua script called by EVALSHA, loaded again when Redis answers NOSCRIPT."""

    def __init__(self, redis: aioredis.Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        """Run the script with ``keys`` and ``args``."""
        return await self.run_packed(self.pack(keys, args))

    def pack(self, keys: list[Any], args: list[Any]) -> bytes:
        """The EVALSHA command in Redis protocol (CPU only: may run ahead of the send)."""
        packed: bytes = hiredis.pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))
        return packed

    async def run_packed(self, packed: bytes) -> Any:
        """Send a `pack`-ed call and read its reply."""
        return await self.receive(await self.send(packed), packed)

    async def send(self, packed: bytes) -> Connection:
        """Send a `pack`-ed call on a pooled connection; `receive` reads its reply."""
        pool = self.redis.connection_pool
        conn: Connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(packed)
        except BaseException:
            await conn.disconnect()
            await pool.release(conn)
            raise
        return conn

    async def receive(self, conn: Connection, packed: bytes) -> Any:
        """The reply of the call `send` put on ``conn`` (loading the script on NOSCRIPT).

        The connection goes back to the pool; one interrupted mid-call is dropped first,
        so a half-read reply never reaches its next user.
        """
        try:
            try:
                return await conn.read_response()
            except NoScriptError:
                await conn.send_command("SCRIPT", "LOAD", self.source)
                await conn.read_response()
                await conn.send_packed_command(packed)
                return await conn.read_response()
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await self.redis.connection_pool.release(conn)
