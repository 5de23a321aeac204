"""Real `python -m pricefeed producer` processes against a private real redis-server."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest
import redis

from shared.codec import decode_map, decode_update
from shared.keys import Keys
from shared.settings import DEFAULT_TICKERS
from tests.helpers.poll import wait_for
from tests.helpers.support import running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FAST = {"PRICEFEED_TICK_INTERVAL": "0.05", "PRICEFEED_LOG_LEVEL": "INFO"}


def log_path(artifacts_dir: Path, namespace: str, name: str) -> Path:
    return artifacts_dir / f"producer-{namespace}-{name}.log"


def cached(client: redis.Redis, keys: Keys) -> dict:
    return {k.decode(): decode_update(v) for k, v in client.hgetall(keys.latest).items()}


def test_channels_and_cache_carry_well_formed_updates(
    sredis: redis.Redis, service_env, namespace, artifacts_dir
) -> None:
    keys = Keys(namespace)
    pubsub = sredis.pubsub()
    pubsub.psubscribe(keys.price_pattern)
    pubsub.subscribe(keys.prices)
    env = {**service_env, **FAST}
    with running(["producer"], env, log_path(artifacts_dir, namespace, "wellformed")):
        per_ticker, maps, last_seq = {}, 0, 0
        deadline = time.monotonic() + 15
        while (len(per_ticker) < len(DEFAULT_TICKERS) or maps < 5) and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)
            if message is None or message["type"] not in ("message", "pmessage"):
                continue
            if message["channel"] == keys.prices.encode():
                tick = decode_map(message["data"])
                assert set(tick) == set(DEFAULT_TICKERS)
                maps += 1
                continue
            update = decode_update(message["data"])
            assert message["channel"].decode() == keys.price(update.ticker)
            assert update.seq > last_seq  # strictly increasing in the order written
            last_seq = update.seq
            # The atomicity rule: right after a message, the cache is never older.
            in_cache = decode_update(sredis.hget(keys.latest, update.ticker))
            assert in_cache.seq >= update.seq
            per_ticker[update.ticker] = update
        assert set(per_ticker) == set(DEFAULT_TICKERS) and maps >= 5
        assert set(cached(sredis, keys)) == set(DEFAULT_TICKERS)
        assert {m.decode() for m in sredis.smembers(keys.watchlist)} == set(DEFAULT_TICKERS)
    pubsub.close()


def test_sigterm_stops_within_a_second_and_releases_the_lease(
    sredis: redis.Redis, service_env, namespace, artifacts_dir
) -> None:
    keys = Keys(namespace)
    with running(["producer"], service_env, log_path(artifacts_dir, namespace, "sigterm")) as svc:
        wait_for(lambda: sredis.hlen(keys.latest) == len(DEFAULT_TICKERS), what="first tick")
        beat = wait_for(lambda: sredis.get(keys.producer), what="the heartbeat")
        status = wait_for(lambda: sredis.get(keys.producer_status), what="the status")
        assert orjson.loads(status) == {
            "id": beat.decode(), "source": "simulator", "state": "ok",
            "tick_interval_s": 0.5, "updated": pytest.approx(time.time(), abs=5),
            "feed": "simulated", "reference": "first price of the UTC day",
        }
        started = time.monotonic()
        svc.signal(signal.SIGTERM)
        rc = svc.proc.wait(5)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"stopped in {elapsed:.2f} s"
        assert rc == 0
        assert sredis.get(keys.producer) is None  # given up, so a standby takes over at once


def test_ctrl_c_stops_within_a_second(sredis, service_env, namespace, artifacts_dir) -> None:
    keys = Keys(namespace)
    with running(["producer"], service_env, log_path(artifacts_dir, namespace, "sigint")) as svc:
        wait_for(lambda: sredis.hlen(keys.latest) > 0, what="first tick")
        started = time.monotonic()
        svc.signal(signal.SIGINT)
        assert svc.proc.wait(5) == 0
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"stopped in {elapsed:.2f} s"


def test_a_bad_setting_exits_with_one_line(service_env, namespace, artifacts_dir) -> None:
    env = {**service_env, "PRICEFEED_TICK_INTERVAL": "fast"}
    with running(["producer"], env, log_path(artifacts_dir, namespace, "badenv")) as svc:
        assert svc.proc.wait(10) == 2
        lines = svc.output().strip().splitlines()
        assert len(lines) == 1 and "PRICEFEED_TICK_INTERVAL" in lines[0]
