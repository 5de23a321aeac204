"""Real producer processes: the stored bars equal the bars recomputed from the tick log over
the same window, through a crash, a standby takeover and a clean restart (docs/BARS.md)."""

from __future__ import annotations

import signal

import pytest
import redis

from shared.bars import INTERVALS, decode_bar
from shared.keys import Keys
from shared.ticklog import decode_entry
from tests.helpers.poll import wait_for
from tests.helpers.support import running
from tests.producer.test_bars import recompute

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TICKERS = ["AAPL", "MSFT", "TSLA"]
FAST = {"PRICEFEED_TICK_INTERVAL": "0.05", "PRICEFEED_TICKERS": ",".join(TICKERS)}


def closes(client: redis.Redis, keys: Keys, by: int):
    """A predicate: AAPL has ``by`` more closed 1 s bars than now."""
    target = client.zcard(keys.bars("1s", "AAPL")) + by
    return lambda: client.zcard(keys.bars("1s", "AAPL")) >= target


def stored(client: redis.Redis, keys: Keys, interval: str) -> dict:
    out = {}
    for ticker in TICKERS:
        members = client.zrange(keys.bars(interval, ticker), 0, -1, withscores=True)
        assert len({s for _, s in members}) == len(members), "two bars with one start"
        out.update({(ticker, int(s)): decode_bar(raw) for raw, s in members})
        raw = client.hget(keys.forming(interval), ticker)
        if raw is not None:
            bar = decode_bar(raw)
            assert (ticker, bar.t) not in out, "the forming bar is also closed"
            out[(ticker, bar.t)] = bar
    return out


def assert_bars_match_the_tick_log(client: redis.Redis, keys: Keys) -> None:
    entries = [decode_entry(i, f) for i, f in client.xrange(keys.ticks)]
    updates = [(t, u.price, u.timestamp, None) for e in entries for t, u in e.updates.items()]
    assert len(updates) > 100
    for interval, width in INTERVALS.items():
        got = stored(client, keys, interval)
        want = recompute(updates, width)
        assert got == want, interval
        for bar in got.values():
            assert bar.lo <= min(bar.o, bar.c) <= max(bar.o, bar.c) <= bar.h and bar.n > 0


def test_bars_equal_the_tick_log_through_a_crash_takeover_and_restart(
    sredis: redis.Redis, service_env, namespace, artifacts_dir
) -> None:
    keys = Keys(namespace)
    env = {**service_env, **FAST}
    log = artifacts_dir / f"producer-{namespace}-bars"
    with running(["producer"], env, log.with_suffix(".a")) as first:
        wait_for(closes(sredis, keys, 2), what="the first producer's bars")
        with running(["producer"], env, log.with_suffix(".b")) as second:
            wait_for(lambda: "standing by" in second.output(), what="standby")
            first.signal(signal.SIGKILL)  # mid-bar, no flush, no release
            wait_for(lambda: "producing" in second.output(), timeout_s=8, what="takeover")
            wait_for(closes(sredis, keys, 2), what="the standby's bars")
    with running(["producer"], env, log.with_suffix(".c")):  # a clean restart
        wait_for(closes(sredis, keys, 2), what="the restarted producer's bars")
    assert_bars_match_the_tick_log(sredis, keys)
