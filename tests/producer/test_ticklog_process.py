"""Real producer processes keep one tick log: through a restart and a standby takeover
it goes on with no repeated or backward position, under the same epoch."""

from __future__ import annotations

import itertools
import signal

import pytest
import redis

from shared.keys import Keys
from shared.ticklog import decode_entry
from tests.helpers.poll import wait_for
from tests.helpers.support import running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FAST = {"PRICEFEED_TICK_INTERVAL": "0.05", "PRICEFEED_TICKERS": "AAPL,MSFT,TSLA"}


def grows(client: redis.Redis, keys: Keys, by: int):
    target = client.xlen(keys.ticks) + by
    return lambda: client.xlen(keys.ticks) >= target


def test_restart_and_takeover_continue_the_log(
    sredis: redis.Redis, service_env, namespace, artifacts_dir
) -> None:
    keys = Keys(namespace)
    env = {**service_env, **FAST}
    log = artifacts_dir / f"producer-{namespace}-log"
    with running(["producer"], env, log.with_suffix(".a")) as first:
        wait_for(grows(sredis, keys, 10), what="first producer's entries")
        epoch = sredis.get(keys.epoch)
        with running(["producer"], env, log.with_suffix(".b")) as second:
            wait_for(lambda: "standing by" in second.output(), what="standby")
            first.signal(signal.SIGKILL)  # mid-stream, no release
            wait_for(lambda: "producing" in second.output(), timeout_s=8, what="takeover")
            wait_for(grows(sredis, keys, 10), what="the standby's entries")
    with running(["producer"], env, log.with_suffix(".c")):  # a plain restart
        wait_for(grows(sredis, keys, 10), what="the restarted producer's entries")
    entries = [decode_entry(i, f) for i, f in sredis.xrange(keys.ticks)]
    assert len(entries) >= 30
    for before, after in itertools.pairwise(entries):
        assert after.seq > before.seq  # the position only moves forward
        assert min(u.seq for u in after.updates.values()) > before.seq  # nothing repeated
    assert sredis.get(keys.epoch) == epoch
