"""The Lua scripts of the producer and a fast way to call them with many arguments.

The tick itself is no script (`producer.transaction`). The others can carry one argument
per ticker; redis-py's asyncio client packs arguments in Python (~15 ms for 20,000,
measured); hiredis packs them in C, so we pack with hiredis and send the packed bytes on a
pooled connection ourselves.
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

# KEYS: lease, the day's reference hash. ARGV: owner id, TTL in s, then ticker/price
# pairs. Keeps the first price of the day per ticker (HSETNX, so a restarted producer and
# its predecessor agree) and returns the stored value of each; nil when the lease is not
# ours.
SET_REFERENCES: Final[str] = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local out = {}
for i = 3, #ARGV, 2 do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  out[#out + 1] = redis.call('HGET', KEYS[2], ARGV[i])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return out
"""

# KEYS: ticks. ARGV: most ids. The ids of the log's first entries, oldest first, read 16
# entries at a time so Redis never holds more than that many tick maps for a reply.
LOG_IDS: Final[str] = """
local out, start, most = {}, '-', tonumber(ARGV[1])
while #out < most do
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 16)
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do out[#out + 1] = entry[1] end
  start = '(' .. batch[#batch][1]
end
return out
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
