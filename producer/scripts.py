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
from redis.exceptions import NoScriptError

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

# KEYS: lease, latest. ARGV: owner id, channel prefix, map channel, number of published
# pairs, then ticker/payload pairs (the published ones first, then cache-only ones).
# Checks the lease, writes the cache, then publishes: one atomic unit (issue 2, point 5).
# HSET takes the pairs in chunks of 2,000 to stay under Lua's unpack() stack limit.
PUBLISH_TICK: Final[str] = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = #ARGV
for i = 5, n, 4000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 3999, n)))
end
local last = 4 + 2 * tonumber(ARGV[4])
if last < 5 then return 1 end
local prefix = ARGV[2]
local parts = {'{'}
local k = 1
for i = 5, last, 2 do
  redis.call('PUBLISH', prefix .. ARGV[i], ARGV[i + 1])
  parts[k + 1] = '"'
  parts[k + 2] = ARGV[i]
  parts[k + 3] = '":'
  parts[k + 4] = ARGV[i + 1]
  parts[k + 5] = ','
  k = k + 5
end
parts[k] = '}'
redis.call('PUBLISH', ARGV[3], table.concat(parts))
return 1
"""


class Script:
    """A Lua script called by EVALSHA, loaded again when Redis answers NOSCRIPT."""

    def __init__(self, redis: aioredis.Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        """Run the script; a connection interrupted mid-call is dropped, never reused."""
        packed = hiredis.pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed)
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
            await pool.release(conn)
