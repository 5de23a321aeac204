"""Faults 1-4 and 7b of docs/RELIABILITY.md with real processes and a real redis-server.

Each test records its figures (recovery time, updates lost, memory) in FIGURES, which
bench/reliability.py reports for docs/RELIABILITY.md (tests/conftest.py writes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time

import orjson
import psutil
import pytest
import redis.asyncio as aioredis

from producer.lease import LEASE_TTL_MS
from tests.helpers.poll import wait_until
from tests.helpers.streams import Recorder, recording
from tests.helpers.system import TICKERS, rss_mb, status, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]
FIGURES: dict[str, dict[str, object]] = {}
FENCE = b"collector-fence"  # a message no producer sends


async def test_redis_dies_and_returns_every_client_resyncs_without_reconnecting(
    redis_server_factory
):
    server = redis_server_factory()
    with system(server.url, gateways=2, PRICEFEED_PING_INTERVAL="0.3") as sys:
        clients = [Recorder(url) for url in sys.urls for _ in range(2)]
        async with recording(*clients) as tasks:
            await wait_until(lambda: all(c.data() for c in clients), 10, "first events")
            server.stop()
            down = time.monotonic()
            for url in sys.urls:
                await wait_until(lambda u=url: status(u, "/api/ready") == 503, 10, "503")

            def in_outage() -> bool:  # every process retrying, every stream kept alive
                return (all("Redis subscription lost" in g.output() for g in sys.gateways)
                        and "Redis is unavailable" in sys.producers[0].output()
                        and all(any(d is None and t > down for t, d in c.frames)
                                for c in clients))

            await wait_until(in_outage, 10, "every process in its retry path, a ping to all")
            await asyncio.to_thread(server.start)
            back = time.monotonic()

            def recovered(c: Recorder) -> bool:
                after = c.data(back)
                full = [t for t, d in after if set(d) == set(TICKERS)]
                return bool(full) and any(t > full[0] for t, _ in after)

            await wait_until(lambda: all(recovered(c) for c in clients), 10, "resync")
            for url in sys.urls:
                await wait_until(lambda u=url: status(u, "/api/ready") == 200, 10, "200")
            ready_s = time.monotonic() - back
            assert not any(t.done() for t in tasks), "a stream ended: the client had to reconnect"
        assert all(s.alive() for s in [*sys.producers, *sys.gateways])
        assert sys.redis().hlen(sys.keys.latest) == len(TICKERS)
        assert {m.decode() for m in sys.redis().smembers(sys.keys.watchlist)} == set(TICKERS)
        rss = [rss_mb(g.proc.pid) for g in sys.gateways]
    firsts = []
    for c in clients:
        after = c.data(back)
        full = next(t for t, d in after if set(d) == set(TICKERS))
        live = next(t for t, _ in after if t > full)
        firsts.append((full - back, live - back))
    worst = max(live for _, live in firsts)
    assert worst < 5.0, firsts
    FIGURES["redis_restart"] = {"snapshot_s": max(f for f, _ in firsts), "live_s": worst,
                                "ready_s": ready_s, "gateway_rss_mb": rss, "clients": 4}


class Collector:
    """Collects (monotonic time, channel, data) from Redis pub/sub in a task."""

    def __init__(self, sys, channels: list[str], patterns: tuple[str, ...] = ()) -> None:
        self.redis = aioredis.from_url(sys.redis_url)
        self.channels, self.patterns = channels, patterns
        self.got: list[tuple[float, str, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self._fenced = asyncio.Event()

    async def __aenter__(self) -> Collector:
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        if self.channels:
            await self.pubsub.subscribe(*self.channels)
        if self.patterns:
            await self.pubsub.psubscribe(*self.patterns)
        self._task = asyncio.create_task(self._run())
        return self

    async def fence(self) -> None:
        """Return once every message published before this call has been collected: one
        connection's pub/sub messages arrive in the order Redis handled the PUBLISHes, so a
        marker published now comes after them all (it is not kept in `got`)."""
        self._fenced = asyncio.Event()
        await self.redis.publish(self.channels[0], FENCE)
        await asyncio.wait_for(self._fenced.wait(), 10)

    async def _run(self) -> None:
        while True:
            message = await self.pubsub.get_message(timeout=1.0)
            if message is None or message["type"] not in ("message", "pmessage"):
                continue
            if message["data"] == FENCE:
                self._fenced.set()
            else:
                self.got.append((time.monotonic(), message["channel"].decode(), message["data"]))

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.pubsub.aclose()
        await self.redis.aclose()


def _ticks(got) -> list[dict]:
    return [orjson.loads(d) for _, c, d in got if c.endswith(":prices")]


def _connections_of(client, pid: int) -> set[str]:
    """The ``addr`` of each connection Redis has open from process ``pid``."""
    ours = {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process(pid).net_connections("tcp")
            if c.laddr}
    return {c["addr"] for c in client.client_list()} & ours


async def test_producer_killed_and_restarted_continues_prices_and_seq(redis_url):
    with system(redis_url, gateways=0) as sys:
        client = sys.redis()
        await wait_until(lambda: client.hlen(sys.keys.latest) == len(TICKERS), 10,
                         what="first tick")
        await wait_until(lambda: client.xlen(sys.keys.ticks) >= 5, 10,
                         what="a few ticks, so prices have moved from the seed")
        theirs = _connections_of(client, sys.producers[0].proc.pid)
        assert theirs, "the producer's connections were not found"
        sys.producers[0].signal(signal.SIGKILL)
        sys.producers[0].proc.wait(5)
        # A tick sent just before the kill may still be in its socket: Redis runs it before
        # it sees the close, so the cache is final once those connections are gone.
        await wait_until(lambda: not theirs & {c["addr"] for c in client.client_list()}, 10,
                         what="Redis closing the killed producer's connections")
        cached = {t.decode(): orjson.loads(v) for t, v in client.hgetall(sys.keys.latest).items()}
        async with Collector(sys, [sys.keys.prices]) as col:
            killed = time.monotonic()
            sys.start_producer()
            await wait_until(lambda: _ticks(col.got), 10, what="a tick from the new producer")
        resumed = col.got[0][0] - killed
        first = _ticks(col.got)[0]
    last_seq = max(u["seq"] for u in cached.values())
    assert set(first) == set(TICKERS)
    for ticker, update in first.items():
        before = cached[ticker]["price"]
        assert abs(update["price"] - before) / before < 0.01, (ticker, before, update)
        assert update["previous_price"] == before
        assert update["seq"] > last_seq
    FIGURES["producer_kill"] = {"resumed_s": resumed, "lease_ttl_s": LEASE_TTL_MS / 1000}


async def test_two_producers_one_publishes_and_the_standby_takes_over(redis_url):
    with system(redis_url, producers=2, gateways=0) as sys:
        client = sys.redis()
        await wait_until(lambda: client.hlen(sys.keys.latest) == len(TICKERS), 10,
                         what="first tick")
        async with Collector(sys, [sys.keys.prices]) as col:
            await wait_until(lambda: len(col.got) >= 10, 10, what="ticks of the first owner")
            owner = client.get(sys.keys.producer).decode()
            active = next(p for p in sys.producers if f":{p.proc.pid}:" in owner)
            standby = next(p for p in sys.producers if p is not active)
            before = len(col.got)
            killed = time.monotonic()
            active.signal(signal.SIGKILL)
            await wait_until(lambda: len(col.got) > before, 10, what="the standby publishing")
            takeover = col.got[before][0] - killed
            await wait_until(lambda: len(col.got) >= before + 10, 10, what="the standby's ticks")
        new_owner = client.get(sys.keys.producer).decode()
        messages = col.got
        assert standby.alive() and f":{standby.proc.pid}:" in new_owner
    seqs: list[int] = []
    for _, _, data in messages:
        pairs = json.loads(data, object_pairs_hook=list)
        tickers = [t for t, _ in pairs]
        assert len(tickers) == len(set(tickers)), "a ticker twice in one tick"
        seqs += [dict(u)["seq"] for _, u in pairs]
    assert len(seqs) == len(set(seqs)), "a duplicate seq"
    assert seqs == sorted(seqs), "two writers interleaved"
    assert takeover < LEASE_TTL_MS / 1000 + 1.0, takeover
    FIGURES["two_producers"] = {"takeover_s": takeover, "ticks_checked": len(messages)}


async def test_gateway_killed_and_restarted_resumes_a_client_with_what_changed(redis_url):
    with system(redis_url) as sys:
        url, port = sys.urls[0], sys.ports[0]
        client = Recorder(url)
        async with recording(client):
            await wait_until(lambda: len(client.data()) >= 3, 10, "events")
        last_id = max(u["seq"] for _, d in client.data() for u in d.values())
        killed = time.monotonic()
        sys.gateways[0].signal(signal.SIGKILL)
        sys.gateways[0].proc.wait(5)
        redis = sys.redis()
        await wait_until(lambda: int(redis.get(sys.keys.seq) or 0) > last_id + 3 * len(TICKERS),
                         10, "ticks while the gateway is down")
        sys.start_gateway(port=port)
        await wait_until(lambda: status(url, "/api/ready") == 200, 20, "restarted gateway")
        back = time.monotonic() - killed
        changed = {t.decode() for t, v in redis.hgetall(sys.keys.latest).items()
                   if orjson.loads(v)["seq"] > last_id}
        resumed = Recorder(url, headers={"Last-Event-ID": str(last_id)})
        async with recording(resumed):
            await wait_until(lambda: resumed.data(), 10, "first event after resume")
        first = resumed.data()[0][1]
    assert changed == set(TICKERS)  # every ticker moved while the gateway was away
    assert changed <= set(first)
    assert all(u["seq"] > last_id for u in first.values())
    FIGURES["gateway_kill"] = {"restart_to_ready_s": back, "tickers_resumed": len(first)}


async def test_sigterm_mid_tick_leaves_cache_and_channels_agreeing(redis_url):
    tickers = ",".join(f"T{i:03d}" for i in range(300))
    stops = []
    with system(redis_url, gateways=0, PRICEFEED_TICKERS=tickers,
                PRICEFEED_TICK_INTERVAL="0.02") as sys:
        client = sys.redis()
        for round_ in range(3):
            producer = sys.producers[-1]
            async with Collector(sys, [sys.keys.prices], (sys.keys.price_pattern,)) as col:
                await wait_until(lambda c=col: len(_ticks(c.got)) >= 5, 15, what="ticks")
                await asyncio.sleep(0.013 * round_)  # the signal lands at another point
                started = time.monotonic()
                producer.signal(signal.SIGTERM)
                rc = await asyncio.to_thread(producer.proc.wait, 5)
                stops.append(time.monotonic() - started)
                await col.fence()  # every message the producer sent has arrived
            messages = col.got
            assert rc == 0
            last_map: dict[str, bytes] = {}
            last_own: dict[str, bytes] = {}
            for _, channel, data in messages:
                if channel.endswith(":prices"):
                    for ticker, update in orjson.loads(data).items():
                        last_map[ticker] = orjson.dumps(update)
                else:
                    last_own[channel.rsplit(":", 1)[1]] = data
            cache = {t.decode(): v for t, v in client.hgetall(sys.keys.latest).items()}
            assert last_map.keys() == cache.keys() == last_own.keys()
            assert {t: orjson.loads(v) for t, v in cache.items()} == {
                t: orjson.loads(v) for t, v in last_map.items()}
            assert last_own == cache
            if round_ < 2:
                sys.start_producer()
    assert max(stops) < 1.0, stops
    FIGURES["producer_sigterm"] = {"stop_s": stops}
