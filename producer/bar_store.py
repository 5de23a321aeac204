"""Bars in Redis: the Lua script that writes them with the tick, and the reads at takeover.

Layout (README "Bars"): closed bars in one sorted set per interval and ticker
(``NS:bars:{1s|1m}:{TICKER}``, score = start, member = bar JSON), trimmed to the retention
and expiring one retention period after its last close; forming bars in one hash per
interval (``NS:forming:{1s|1m}``, ticker -> bar JSON); each close batch published on
``NS:bars:{1s|1m}`` as ``{TICKER: bar}``.

A tick that closes bars or refreshes forming ones runs the tick script and `WRITE_BARS`
in ONE ``MULTI``/``EXEC`` (docs/BARS.md "Consistency"): a reader sees the closed bar and
its successor in the forming hash together or neither, and a standby taking over can
neither close a bar twice nor miss one. Both scripts check the lease.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection as Connection
from redis.exceptions import ResponseError

from producer.bars import Bars
from shared.bars import INTERVALS, Bar, decode_bar
from shared.errors import CodecError
from shared.keys import Keys
from shared.ticklog import LogEntry, decode_entry

log = logging.getLogger(__name__)

# KEYS: lease, forming seq. ARGV: owner, the last seq folded into the forming bars sent
# ('' when none are sent), then per interval (1s, 1m) a section: closed-key prefix,
# forming hash, channel, retention s, #closed, #forming, #ended, channel message, then
# #closed (ticker, start, bar) triples, #forming (ticker, bar) pairs, #ended tickers.
# Chunks of 2,000 pairs keep unpack() under Lua's stack limit.
WRITE_BARS: Final[str] = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
local i = 3
while i <= #ARGV do
  local prefix, forming, channel = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local keep = tonumber(ARGV[i + 3])
  local nc, nf, nd = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  local message = ARGV[i + 7]
  i = i + 8
  for j = i, i + 3 * nc - 1, 3 do
    local key, t = prefix .. ARGV[j], tonumber(ARGV[j + 1])
    redis.call('ZADD', key, t, ARGV[j + 2])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', t - keep)
    redis.call('EXPIRE', key, keep)
  end
  i = i + 3 * nc
  local last = i + 2 * nf - 1
  for j = i, last, 4000 do
    redis.call('HSET', forming, unpack(ARGV, j, math.min(j + 3999, last)))
  end
  i = last + 1
  last = i + nd - 1
  for j = i, last, 4000 do
    redis.call('HDEL', forming, unpack(ARGV, j, math.min(j + 3999, last)))
  end
  i = last + 1
  if nc > 0 then redis.call('PUBLISH', channel, message) end
end
return 1
"""


# KEYS: lease, closed-bar key. ARGV: owner, retention s, cutoff (bars must start below it:
# the forming bar's start), oldest start kept, then (start, bar) pairs. Adds only starts
# that have no bar yet (docs/BARS.md "Backfill"); returns how many it added, -1 when the
# lease is not ours.
BACKFILL_BARS: Final[str] = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cutoff, oldest, added = tonumber(ARGV[3]), tonumber(ARGV[4]), 0
for j = 5, #ARGV, 2 do
  local t = tonumber(ARGV[j])
  if t < cutoff and t >= oldest and redis.call('ZCOUNT', KEYS[2], t, t) == 0 then
    redis.call('ZADD', KEYS[2], t, ARGV[j + 1])
    added = added + 1
  end
end
if added > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return added
"""


def bar_section(keys: Keys, interval: str, retention_s: int, closed: Bars,
                forming: Bars | None, ended: Iterable[str]) -> list[str | bytes | int]:
    """One interval's part of `WRITE_BARS`' arguments."""
    closed_json = closed.encode()
    forming_json = forming.encode() if forming is not None else []
    forming_names = forming.tickers if forming is not None else []
    ended = list(ended)
    args: list[str | bytes | int] = [
        keys.bars_prefix(interval), keys.forming(interval), keys.bar_channel(interval),
        retention_s, len(closed_json), len(forming_json), len(ended),
        bar_map(closed.tickers, closed_json),
    ]
    triples: list[str | bytes | int] = [b""] * (3 * len(closed_json))
    triples[0::3], triples[1::3], triples[2::3] = closed.tickers, closed.t.tolist(), closed_json
    pairs: list[str | bytes | int] = [b""] * (2 * len(forming_json))
    pairs[0::2], pairs[1::2] = forming_names, forming_json
    return args + triples + pairs + ended


def bar_map(tickers: Iterable[str], payloads: Iterable[bytes]) -> bytes:
    """``{TICKER: bar}`` from encoded bars, without re-encoding."""
    parts = [b'"%b":%b' % (t.encode(), p) for t, p in zip(tickers, payloads, strict=True)]
    return b"{" + b",".join(parts) + b"}"


def pack_eval(source: str, keys: list[Any], args: list[Any]) -> bytes:
    """An ``EVAL`` with the full source: inside MULTI it can never fail with NOSCRIPT."""
    packed: bytes = hiredis.pack_command(("EVAL", source, len(keys), *keys, *args))
    return packed


def pack_multi(*commands: bytes) -> bytes:
    """``commands`` (each already packed) wrapped in MULTI/EXEC."""
    return b"".join([hiredis.pack_command(("MULTI",)), *commands, hiredis.pack_command(("EXEC",))])


async def receive_multi(redis: aioredis.Redis, conn: Connection, count: int) -> list[Any]:
    """The EXEC reply of a `pack_multi` of ``count`` commands sent on ``conn``.

    An error inside the transaction is raised; the connection goes back to the pool (a
    connection interrupted mid-reply is dropped first).
    """
    try:
        for _ in range(count + 1):  # +OK for MULTI, +QUEUED per command
            await conn.read_response()
        results = await conn.read_response()
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await redis.connection_pool.release(conn)
    if not isinstance(results, list):
        raise ResponseError(f"the tick transaction was aborted: {results!r}")
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


Stored = dict[str, dict[str, tuple[Bar | None, int | None]]]


async def load_bars(redis: aioredis.Redis, keys: Keys, tickers: list[str]
                    ) -> tuple[Stored, int | None]:
    """Per interval and ticker: the stored forming bar and the newest closed bar's start;
    and the last seq folded into the stored forming bars (None when unknown).

    One round trip for any number of tickers; a corrupt entry counts as absent (logged).
    """
    out: Stored = {}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.forming_seq)
        for name in INTERVALS if tickers else ():
            pipe.hmget(keys.forming(name), tickers)
            for ticker in tickers:
                pipe.zrange(keys.bars(name, ticker), -1, -1, withscores=True)
        replies = await pipe.execute()
    raw_seq = replies[0]
    seq = int(raw_seq) if raw_seq is not None and raw_seq.isdigit() else None
    at = 1
    for name in INTERVALS if tickers else ():
        forming_raw = replies[at]
        newest = replies[at + 1: at + 1 + len(tickers)]
        at += 1 + len(tickers)
        out[name] = {
            ticker: (_decode_or_none(raw, ticker), int(top[0][1]) if top else None)
            for ticker, raw, top in zip(tickers, forming_raw, newest, strict=True)
        }
    return out, seq


async def ticks_after(redis: aioredis.Redis, keys: Keys, seq: int, most: int
                      ) -> list[LogEntry]:
    """The tick log's entries after ``seq`` (at most ``most``), oldest first; a corrupt
    entry is logged and skipped."""
    out = []
    entries: list[Any] = await redis.xrange(keys.ticks, f"{seq + 1}", "+", count=most) or []
    for entry_id, fields in entries:
        try:
            out.append(decode_entry(entry_id, fields))
        except CodecError as e:
            log.warning("skipping a corrupt tick log entry while continuing bars: %s", e)
    return out


def _decode_or_none(raw: bytes | None, ticker: str) -> Bar | None:
    if raw is None:
        return None
    try:
        return decode_bar(raw)
    except CodecError as e:
        log.warning("ignoring the corrupt forming bar of %s: %s", ticker, e)
        return None


def retentions(settings_1s: int, settings_1m: int) -> Mapping[str, int]:
    """Retention in seconds per interval name."""
    return {"1s": settings_1s, "1m": settings_1m}
