"""`pricefeed watch` in a pseudo-terminal, fed through a real redis-server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from bench.contract_publisher import ClusterContractWriter, ContractWriter
from pricefeed.watch import SPARK
from shared.keys import Keys
from shared.redisio import SERVICE, cluster_topology
from shared.settings import Settings
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.support import ROOT, free_port
from tests.helpers.terminal import Terminal
from tests.helpers.topologies import one_partition_per_primary

pytestmark = pytest.mark.integration

PRICES = {"AAPL": 190.0, "MSFT": 420.0, "TSLA": 250.0, "NVDA": 800.0}
REFERENCES = {"AAPL": 180.0, "MSFT": 400.0, "TSLA": 250.0, "NVDA": 800.0}


def test_watch_renders_the_tickers_and_logs_big_moves_then_quits_on_ctrl_c(
        sredis, redis_url, namespace):
    writer = ContractWriter(sredis, Keys(namespace), PRICES, REFERENCES)
    writer.tick()
    term = Terminal(["watch", "--tickers", "aapl,TSLA"],
                    {"REDIS_URL": redis_url, "PRICEFEED_NAMESPACE": namespace})
    try:
        # Change and Change % since the reference (180.00), not since the last tick.
        screen = term.wait_for_text("AAPL", "TSLA", "190.19", "live", "+10.19", "+5.66%")
        assert "MSFT" not in screen and "NVDA" not in screen  # --tickers narrows
        term.mark()
        writer.tick(moves={"TSLA": 1.03})  # a 3 % move: the log must show it
        screen = term.wait_for_text("TSLA ▲ +3.00%")
        assert "▲" in screen
        term.press_ctrl_c()
        assert term.wait_exit() == 0
        assert "Traceback" not in term.text()
    finally:
        term.close()


def test_watch_says_in_one_line_when_redis_cannot_be_reached():
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = subprocess.run([sys.executable, "-m", "pricefeed", "watch"], cwd=ROOT,
                          env={"REDIS_URL": url, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "cannot reach Redis" in done.stderr and url in done.stderr


def test_watch_shows_a_lost_redis_and_catches_up_when_it_returns(
        redis_server_factory, namespace):
    server = redis_server_factory()
    client = server.client()
    writer = ContractWriter(client, Keys(namespace), {"AAPL": 190.0})
    writer.tick()
    term = Terminal(["watch"], {"REDIS_URL": server.url, "PRICEFEED_NAMESPACE": namespace})
    try:
        term.wait_for_text("AAPL", "190.19", "live")
        term.mark()
        server.stop()
        # The outage shows in the dashboard's status line, with why and since when.
        term.wait_for_text("Redis unreachable since", "lost Redis")
        server.start()
        writer.tick(publish=False)  # only a fresh snapshot can show this price
        term.wait_for_text("live", "190.38")
        term.mark()
        writer.tick()  # the next frame: the outage's line is gone with the outage
        term.wait_for_text("190.57")
        assert "lost Redis" not in term.text()[term.mark_at:]
        assert "WARNING" not in term.text()  # no log line printed above the dashboard
        term.press_ctrl_c()
        assert term.wait_exit() == 0
    finally:
        client.close()
        term.close()


def test_watch_says_resynced_when_the_dataset_is_wiped(sredis, redis_url, namespace):
    keys = Keys(namespace)
    ContractWriter(sredis, keys, {"AAPL": 190.0}).tick()
    term = Terminal(["watch"], {"REDIS_URL": redis_url, "PRICEFEED_NAMESPACE": namespace})
    try:
        term.wait_for_text("AAPL", "190.19", "live")
        for key in list(sredis.scan_iter(match=f"{namespace}:*")):
            sredis.delete(key)
        term.mark()
        ContractWriter(sredis, keys, {"AAPL": 50.0}).tick()  # seqs start over at 1
        term.wait_for_text("resynced", "50.05")
        term.press_ctrl_c()
        assert term.wait_exit() == 0
    finally:
        term.close()


def test_watch_sparklines_start_full_from_the_1s_bars(sredis, redis_url, namespace):
    keys = Keys(namespace)
    for i in range(30):  # half a minute of 1 s bars, rising, written as the contract says
        close = round(185.0 + i * 0.15, 2)
        bar = (f'{{"t":{1_764_064_800 + i},"o":{close},"h":{close},"l":{close},'
               f'"c":{close},"n":2,"v":null}}')
        sredis.zadd(keys.bars("1s", "AAPL"), {bar: 1_764_064_800 + i})
    writer = ContractWriter(sredis, keys, PRICES)
    writer.tick()
    term = Terminal(["watch", "--tickers", "AAPL,MSFT"],
                    {"REDIS_URL": redis_url, "PRICEFEED_NAMESPACE": namespace})
    try:
        screen = term.wait_for_text("190.19", "420.42", "live")
        screen = screen.rsplit("pricefeed watch", 1)[-1]  # the last frame drawn
        aapl = next(line for line in screen.splitlines() if "AAPL" in line)
        msft = next(line for line in screen.splitlines() if "MSFT" in line)
        spark = [c for c in aapl if c in SPARK]
        assert len(spark) == 31  # 30 closes from before it started, then the first tick
        assert spark[0] == "▁" and spark[-1] == "█"
        assert len([c for c in msft if c in SPARK]) == 1  # no bars: only what it saw
        term.press_ctrl_c()
        assert term.wait_exit() == 0
    finally:
        term.close()


def test_watch_says_why_a_ticker_has_no_price_and_names_the_source(
        sredis, redis_url, namespace):
    keys = Keys(namespace)
    sredis.sadd(keys.watchlist, "AAPL", "MSFT")
    ContractWriter(sredis, keys, {"AAPL": 190.0}).tick()
    term = Terminal(["watch", "--tickers", "AAPL,MSFT,ZZZZ"],
                    {"REDIS_URL": redis_url, "PRICEFEED_NAMESPACE": namespace})
    try:
        # No producer runs: MSFT (watched) waits for it; ZZZZ is not watched at all.
        screen = term.wait_for_text("no producer is running", "not on the watchlist")
        assert "ZZZZ" in screen and "waiting: no producer is running" in screen
        term.mark()
        sredis.set(keys.producer, "a-producer")
        sredis.set(keys.producer_status, b'{"source": "simulator", "state": "ok", '
                   b'"feed": "simulated", "reference": "first price of the UTC day"}')
        term.wait_for_text("prices: simulator (simulated prices, not market data); "
                           "Change since the first price of the UTC day",
                           "waiting for its first price")
        term.mark()
        sredis.set(keys.producer_status, b'{"source": "massive-rest", "state": '
                   b'"auth_rejected", "detail": "Massive rejected the API key (HTTP 401)"}')
        term.wait_for_text("waiting: key rejected (Massive rejected the API key (HTTP 401))")
        term.press_ctrl_c()
        assert term.wait_exit() == 0
    finally:
        term.close()


async def test_watch_on_a_cluster_shows_prices_and_follows_a_primary_failover(namespace):
    """REDIS_URL names a Cluster (P = 3, one partition per primary): the dashboard shows
    every partition's prices, the watchlist from the meta slot, and after the primary of
    MSFT's partition is SIGKILLed, MSFT's next price from the promoted replica."""
    group = RedisClusterGroup(primaries=3, replicas=1).start()
    try:
        one_partition_per_primary(group)
    except BaseException:
        group.close()  # the test's own try below is not entered yet
        raise
    settings = Settings.from_env({"REDIS_URL": group.url, "PRICEFEED_NAMESPACE": namespace,
                                  "PRICEFEED_PARTITIONS": "3"})
    topology = cluster_topology(settings, SERVICE)
    writer = ClusterContractWriter(topology, settings.layout,
                                   {"AAPL": 190.0, "MSFT": 420.0, "GOOG": 170.0}, REFERENCES)
    term = None
    try:
        await writer.aconfig()
        await topology.client_for(settings.layout.meta).sadd(
            settings.layout.meta.watchlist, "AAPL", "MSFT", "GOOG")
        await writer.atick()
        # Only the URL: the number of partitions comes from the Cluster's config.
        term = Terminal(["watch", "--tickers", "AAPL,MSFT,GOOG,ZZZZ"],
                        {"REDIS_URL": group.url, "PRICEFEED_NAMESPACE": namespace})
        await asyncio.to_thread(term.wait_for_text, "190.19", "420.42", "170.17", "live",
                                "not on the watchlist")
        group.primary_of(settings.layout.of("MSFT").latest).proc.kill()
        await writer.atick({"MSFT": 333.33})  # sent again until the replica took over
        await asyncio.to_thread(term.wait_for_text, "333.33", "live")
        term.press_ctrl_c()
        assert await asyncio.to_thread(term.wait_exit) == 0
        assert "Traceback" not in term.text()
    finally:
        if term is not None:
            term.close()
        await topology.aclose()
        group.close()


def test_watch_says_in_one_line_when_no_cluster_node_answers():
    url = f"redis+cluster://:pw@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "pricefeed", "watch"], cwd=ROOT,
                          env={"REDIS_URL": url, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "cannot reach Redis at redis+cluster://:***@127.0.0.1" in done.stderr
    assert "no Cluster node answered" in done.stderr and "pw" not in done.stderr
