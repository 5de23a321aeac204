"""What a term continues from, read from one set of names (one server's, or a Cluster
partition's): the cache pruned to the watched tickers, and the tick log's ids.

The one-server runner and each Cluster partition's term read the same things at the start
of a term (docs/CLUSTER.md "Producers scale out": a producer that takes a partition
continues it as a standby does on one server).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis.asyncio as aioredis

from producer.publisher import LOG_SLACK
from producer.scripts import LOG_IDS, Script
from shared.keys import Keys
from shared.ticklog import parse_entry_id

log = logging.getLogger(__name__)


async def prune_cache(redis: aioredis.Redis, keys: Keys, tickers: Iterable[str]) -> None:
    """Delete cached prices of tickers not produced: one removed while no producer
    was listening would otherwise stay in every snapshot forever."""
    keep = set(tickers)
    fields = [f.decode(errors="replace") if isinstance(f, bytes) else str(f)
              for f in await redis.hkeys(keys.latest)]
    stale = [f for f in fields if f not in keep]
    if stale:
        await redis.hdel(keys.latest, *stale)
        shown = ", ".join(f[:12] for f in stale[:10])
        log.info("removed %d unwatched tickers from the cache (%s%s)", len(stale), shown,
                 ", ..." if len(stale) > 10 else "")


async def logged_ids(script: Script, keys: Keys, history_len: int) -> list[tuple[int, int]]:
    """The ``(seq, ms)`` ids in the tick log, oldest first (``script`` is `LOG_IDS` on the
    client of ``keys``): a term's seqs go above them (even if the seq key was lost), and
    the age cap reaches them too."""
    if not history_len:
        return []
    raw = await script(keys=[keys.ticks], args=[history_len + LOG_SLACK])
    return [parse_entry_id(i) for i in raw]


def log_ids_script(redis: aioredis.Redis) -> Script:
    """The script `logged_ids` runs, bound to ``redis``."""
    return Script(redis, LOG_IDS)
