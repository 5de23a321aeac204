"""Real producer processes: restart continuity, standby takeover, Redis going away."""

from __future__ import annotations

import signal
import time

import psutil
import pytest
import redis

from producer.sources.seed import SEED_PRICES
from shared.codec import decode_map, decode_update, encode_update
from shared.keys import Keys
from shared.models import PriceUpdate
from tests.helpers.poll import wait_for
from tests.helpers.support import running

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.reliability]

FAST = {"PRICEFEED_TICK_INTERVAL": "0.05", "PRICEFEED_TICKERS": "AAPL,MSFT,TSLA"}


def latest(client: redis.Redis, keys: Keys, ticker: str) -> PriceUpdate | None:
    raw = client.hget(keys.latest, ticker)
    return None if raw is None else decode_update(raw)


def test_a_restart_continues_from_the_cached_prices(
    sredis: redis.Redis, service_env, namespace, artifacts_dir
) -> None:
    keys = Keys(namespace)
    sredis.hset(keys.latest, "AAPL", encode_update(PriceUpdate("AAPL", 1000.0, 999.0, 1.0, 41)))
    sredis.hset(keys.latest, "MSFT", b'{"ticker": "MSFT", "price": -3}')  # corrupt
    log = artifacts_dir / f"producer-{namespace}-continuity.log"
    with running(["producer"], {**service_env, **FAST}, log) as svc:
        wait_for(lambda: latest(sredis, keys, "AAPL").seq > 41, what="AAPL published")
        aapl = latest(sredis, keys, "AAPL")
        assert abs(aapl.price / 1000.0 - 1) < 0.01  # not back to the seed's 190
        wait_for(lambda: sredis.hexists(keys.latest, "MSFT") and latest(sredis, keys, "MSFT"))
        assert abs(latest(sredis, keys, "MSFT").price / SEED_PRICES["MSFT"] - 1) < 0.01
        assert "corrupt cached price of MSFT" in svc.output()
        wait_for(lambda: latest(sredis, keys, "AAPL").seq > aapl.seq + 30, what="more ticks")
    before = {t: latest(sredis, keys, t) for t in ("AAPL", "MSFT", "TSLA")}
    with running(["producer"], {**service_env, **FAST}, log):
        wait_for(lambda: latest(sredis, keys, "TSLA").seq > before["TSLA"].seq, what="restart")
        for ticker, old in before.items():
            new = latest(sredis, keys, ticker)
            assert new.seq > old.seq
            assert abs(new.price / old.price - 1) < 0.01, ticker  # continued, no snap back


def test_a_standby_takes_over_when_the_active_producer_dies(
    sredis: redis.Redis, service_env, namespace, artifacts_dir
) -> None:
    keys = Keys(namespace)
    env = {**service_env, **FAST}
    with running(["producer"], env, artifacts_dir / f"producer-{namespace}-a.log") as first:
        wait_for(lambda: sredis.hlen(keys.latest) == 3, what="first producer")
        active = wait_for(lambda: sredis.get(keys.producer), what="its heartbeat")
        with running(["producer"], env, artifacts_dir / f"producer-{namespace}-b.log") as second:
            wait_for(lambda: "standing by" in second.output(), what="standby")
            assert sredis.get(keys.producer) == active
            last_seq = latest(sredis, keys, "AAPL").seq
            first.signal(signal.SIGKILL)  # no clean release: the lease must expire
            killed = time.monotonic()
            wait_for(lambda: sredis.get(keys.producer) not in (None, active), timeout_s=6,
                     what="takeover")
            wait_for(lambda: latest(sredis, keys, "AAPL").seq > last_seq, what="publishing")
            assert time.monotonic() - killed < 5.0
            assert second.alive()


def test_a_paused_producer_never_publishes_beside_its_successor(
    sredis: redis.Redis, service_env, namespace, artifacts_dir
) -> None:
    keys = Keys(namespace)
    env = {**service_env, **FAST}
    pubsub = sredis.pubsub()
    pubsub.subscribe(keys.prices)
    with running(["producer"], env, artifacts_dir / f"producer-{namespace}-p1.log") as first:
        wait_for(lambda: sredis.hlen(keys.latest) == 3, what="first producer")
        with running(["producer"], env, artifacts_dir / f"producer-{namespace}-p2.log") as second:
            wait_for(lambda: "standing by" in second.output(), what="standby")
            first.signal(signal.SIGSTOP)  # paused mid-run: its lease expires
            wait_for(lambda: "producing" in second.output(), timeout_s=6, what="takeover")
            first.signal(signal.SIGCONT)
            wait_for(lambda: "lost the lease" in first.output(), timeout_s=6, what="step down")
            seqs = []
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # both alive: only one may publish
                message = pubsub.get_message(timeout=0.2)
                if message and message["type"] == "message":
                    tick = message["data"]
                    seqs.append(decode_update_seq(tick))
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and len(seqs) > 5
            assert first.alive() and second.alive()
    pubsub.close()


def decode_update_seq(tick_map: bytes) -> int:
    return max(u.seq for u in decode_map(tick_map).values())


def test_redis_stopped_and_restarted_mid_run(redis_server_factory, namespace, artifacts_dir):
    server = redis_server_factory()
    keys = Keys(namespace)
    client = server.client()
    env = {"REDIS_URL": server.url, "PRICEFEED_NAMESPACE": namespace, **FAST}
    with running(["producer"], env, artifacts_dir / f"producer-{namespace}-outage.log") as svc:
        wait_for(lambda: client.hlen(keys.latest) == 3, what="first tick")
        client.sadd(keys.watchlist, "NVDA")  # a watchlist change Redis will forget
        wait_for(lambda: client.hexists(keys.latest, "NVDA"), timeout_s=6, what="NVDA")
        before = {t: latest(client, keys, t) for t in ("AAPL", "NVDA")}
        server.stop()
        wait_for(lambda: "Redis is unavailable" in svc.output(), what="outage noticed")
        cpu = psutil.Process(svc.proc.pid).cpu_percent(interval=2.0)
        assert cpu < 20, f"{cpu} % of a core while Redis is down: a busy loop"
        server.start()  # an empty Redis: it lost every key
        client = server.client()
        wait_for(lambda: client.hlen(keys.latest) == 4, timeout_s=10, what="cache rewritten")
        assert {m.decode() for m in client.smembers(keys.watchlist)} == {
            "AAPL", "MSFT", "TSLA", "NVDA"}
        for ticker, old in before.items():
            new = latest(client, keys, ticker)
            assert new.seq > old.seq  # seq did not restart from 1
            assert abs(new.price / old.price - 1) < 0.01  # continued from memory
        output = svc.output()
        assert output.count("Redis is unavailable") == 1  # one line per change of state
        assert output.count("Redis is reachable again") == 1
        assert svc.alive()


def test_redis_down_at_start(redis_server_factory, namespace, artifacts_dir) -> None:
    server = redis_server_factory()
    server.stop()
    keys = Keys(namespace)
    env = {"REDIS_URL": server.url, "PRICEFEED_NAMESPACE": namespace, **FAST,
           "PRICEFEED_LOG_LEVEL": "DEBUG"}  # a DEBUG line per retry shows the retries
    with running(["producer"], env, artifacts_dir / f"producer-{namespace}-late.log") as svc:
        wait_for(lambda: "Redis is unavailable" in svc.output(), what="the first failure")
        wait_for(lambda: svc.output().count("next try in") >= 3,
                 what="retries, which must not log the failure again")
        server.start()
        client = server.client()
        wait_for(lambda: client.hlen(keys.latest) == 3, timeout_s=10, what="publishing")
        assert svc.output().count("Redis is unavailable") == 1
