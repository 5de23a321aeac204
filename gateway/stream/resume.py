"""Resuming a stream from its last event id (README "Resume and continuity").

An event id is ``<epoch>-<pos>-<prev>``: the dataset's epoch, the tick-log position the
event brings the client to, and the position of the client's previous event (parsed by
`gateway.stream.request`). A client that comes back with one gets, when the epoch is the
same and the position is still in the log, what it missed: by default one event with the
latest value of every ticker that changed, with ``?replay=all`` every missed tick in
order (read from ``NS:ticks`` a chunk at a time). Otherwise it gets `event: reset` and a
full snapshot.

A replay is bounded: at most `REPLAY_MAX_UPDATES` updates behind (the distance in seqs,
which is at least the number of updates), else a reset; it holds one chunk of at most
`REPLAY_CHUNK_BYTES` of entries at a time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final

import redis.asyncio as aioredis

from gateway.hub import Changes, Client
from gateway.positions import Position, covered
from gateway.reads import StreamView
from gateway.stream.request import EventId
from gateway.updates import EncodedUpdate
from shared.codec import encode_update
from shared.errors import CodecError
from shared.keys import Keys
from shared.logs import LogThrottle
from shared.models import PriceUpdate
from shared.ticklog import MAP_FIELD, decode_entry

log = logging.getLogger(__name__)
_bad_entry_log = LogThrottle(log, 10.0)

# 50,000 updates is the whole default log at the default load (3,600 ticks x 10 tickers,
# plus the seqs skipped between blocks) and ~11 MB of JSON to send.
REPLAY_MAX_UPDATES: Final[int] = 50_000
REPLAY_CHUNK_BYTES: Final[int] = 512 * 1024
UPDATE_BYTES: Final[int] = 230  # one PriceUpdate in a tick map, about (measured: 205-225)


def resumable(view: StreamView, last: EventId, replay_all: bool) -> bool:
    """True when the client at ``last`` can be made whole without a reset: same epoch,
    a position still in the log and not ahead of it, and (for a replay) not too far."""
    pos = last.pos
    if last.epoch != view.epoch or not isinstance(pos, int) \
            or not (0 < view.first <= pos <= view.top):
        return False
    return not replay_all or view.top - pos <= REPLAY_MAX_UPDATES


def changed_since(updates: Mapping[str, PriceUpdate], top: Position,
                  wanted: frozenset[str] | None, after: Position) -> Changes:
    """The default resume event: the latest update of every wanted ticker newer than
    ``after`` (all of them for ``after`` = 0), at position ``top``."""
    items: dict[str, EncodedUpdate] = {
        t: EncodedUpdate(u.seq, encode_update(u))
        for t, u in updates.items()
        if (wanted is None or t in wanted) and u.seq > covered(after, t)
    }
    return Changes(items, top)


async def replay(
    redis: aioredis.Redis, keys: Keys, client: Client, after: int, tickers_hint: int
) -> AsyncGenerator[Changes, None]:
    """Every tick after position ``after`` from the log, in order, until caught up (or
    `REPLAY_MAX_UPDATES` past ``after``); each narrowed to the client's filter. A tick
    without a wanted ticker is skipped; a malformed entry is logged and skipped."""
    count = max(1, min(100, REPLAY_CHUNK_BYTES // (UPDATE_BYTES * max(1, tickers_hint))))
    start, limit = after, after + REPLAY_MAX_UPDATES
    while start < limit:
        async with _readers:  # many replays at once queue here, not for a pool connection
            chunk: Any = await redis.xrange(keys.ticks, min=str(start + 1), max="+",
                                            count=count)
        if not chunk:
            return
        for entry_id, fields in chunk:
            batch = _entry_batch(entry_id, fields, client.tickers)
            if batch is not None and isinstance(batch.pos, int):  # one server's log
                start = max(start, batch.pos)
                if batch.items:
                    yield batch
        start = max(start, _seq_of(chunk[-1][0], start))
        del chunk


class EntryCache:
    """Log entries already validated and split into hub items, shared by every replaying
    client: clients resuming together read the same entries, and the check and split cost
    ~0.15 ms per 10-ticker entry (measured: 90 ms per client 600 entries behind without
    it). Bounded by `CACHE_BYTES` of tick maps; keyed by the entry id and its bytes, so a
    new dataset reusing an id is never mistaken for the old one."""

    def __init__(self, most_bytes: int) -> None:
        self.most_bytes = most_bytes
        self.bytes = 0
        self._items: collections.OrderedDict[tuple[bytes, bytes], Changes]
        self._items = collections.OrderedDict()

    def get(self, entry_id: bytes, raw: bytes) -> Changes | None:
        """The whole entry as a batch (its frame shared too); None for a malformed one."""
        key = (entry_id, raw)
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        try:
            entry = decode_entry(entry_id, {MAP_FIELD: raw})
        except CodecError as e:
            _bad_entry_log.warning("skipping malformed tick log entry %r: %s", entry_id[:40], e)
            return None
        items = {t: EncodedUpdate(u.seq, encode_update(u)) for t, u in entry.updates.items()}
        value = Changes(items, entry.seq)
        self._items[key] = value
        self.bytes += len(raw)
        while self.bytes > self.most_bytes:
            (_, old), _ = self._items.popitem(last=False)
            self.bytes -= len(old)
        return value


CACHE_BYTES: Final[int] = 16 * 1024 * 1024  # ~8,000 ticks of 10 tickers
# Replay reads in flight at once: fewer than the gateway's pool (`gateway.connections`),
# so 1,000 clients resuming together wait here in turn instead of timing out on the pool
# (measured: their reads timed out after 5 s and the replays stopped).
REPLAY_READERS: Final[int] = 4
_readers = asyncio.Semaphore(REPLAY_READERS)
_cache = EntryCache(CACHE_BYTES)


def _entry_batch(entry_id: Any, fields: Any, wanted: frozenset[str] | None) -> Changes | None:
    raw = fields.get(MAP_FIELD) if isinstance(fields, dict) else None
    if not isinstance(entry_id, bytes) or not isinstance(raw, bytes):
        _bad_entry_log.warning("skipping a tick log entry without a map: %r", entry_id)
        return None
    whole = _cache.get(entry_id, raw)
    if whole is None or wanted is None:
        return whole
    return Changes({t: i for t, i in whole.items.items() if t in wanted}, whole.pos)


def _seq_of(entry_id: Any, default: int) -> int:
    head = bytes(entry_id).split(b"-", 1)[0]
    return int(head) if head.isdigit() else default
