"""Bars in Redis: the backfill script and the reads at takeover (the writes with the tick
are in `producer.commands`).

Layout (README "Bars"): closed bars in one sorted set per interval and ticker
(``NS:bars:{1s|1m}:{TICKER}``, score = start, member = bar JSON), trimmed to the retention
and expiring one retention period after its last close; forming bars in one hash per
interval (``NS:forming:{1s|1m}``, ticker -> bar JSON); each close batch published on
``NS:bars:{1s|1m}`` as ``{TICKER: bar}``.

A tick that closes bars or refreshes forming ones carries the bar writes in its own fenced
``MULTI``/``EXEC`` (docs/BARS.md "Consistency"): a reader sees the closed bar and its
successor in the forming hash together or neither, and a standby taking over can neither
close a bar twice nor miss one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import redis.asyncio as aioredis

from shared.bars import INTERVALS, Bar, decode_bar
from shared.errors import CodecError
from shared.keys import Keys
from shared.ticklog import LogEntry, decode_entry

log = logging.getLogger(__name__)

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
