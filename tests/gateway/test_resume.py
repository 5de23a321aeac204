"""Resume from the tick log with real processes: a real producer, the real gateway
process and a private redis-server (README "Resume and continuity")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis

from shared.codec import decode_update
from shared.keys import Keys
from shared.ticklog import decode_entry
from tests.gateway.test_process import gateway_env, wait_serving
from tests.helpers.poll import wait_until
from tests.helpers.sse import Block, SSEReader, open_stream
from tests.helpers.support import RedisServer, Service, free_port, running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
STREAM = "/api/stream/prices"
FAST = {"PRICEFEED_TICK_INTERVAL": "0.05", "PRICEFEED_TICKERS": "AAPL,MSFT,TSLA,NVDA"}


class Chain:
    """A client's view of one stream: it checks every event follows the previous one."""

    def __init__(self) -> None:
        self.state: dict[str, dict] = {}
        self.last: Block | None = None
        self.events: list[Block] = []

    async def take(self, sse: SSEReader, timeout_s: float = 10.0) -> Block:
        block = await sse.event(timeout_s)
        if block.event == "reset":
            self.state, self.last = {}, None
            return block
        _, pos, prev = block.position
        if prev == 0:
            self.state = {}
        elif self.last is not None:
            assert prev == self.last.position[1], (prev, self.last.id)  # no gap
        assert pos > prev or pos == prev == 0  # (0: an empty dataset)
        for ticker, update in block.json().items():
            assert update["seq"] > self.state.get(ticker, {}).get("seq", 0)  # no duplicate
            self.state[ticker] = update
        self.last = block
        self.events.append(block)
        return block


def top(client: redis.Redis, keys: Keys) -> int:
    last = client.xrevrange(keys.ticks, count=1)
    return decode_entry(*last[0]).seq if last else 0


def cache(client: redis.Redis, keys: Keys) -> dict[str, dict]:
    return {k.decode(): decode_update(v).to_dict() for k, v in client.hgetall(keys.latest).items()}


@contextlib.contextmanager
def gateway(env: dict[str, str], port: int, log) -> Iterator[Service]:
    with running(["gateway"], gateway_env(env, port), log) as svc:
        yield svc


async def test_replay_all_across_a_gateway_restart_gets_every_tick_once(
    sredis, service_env, namespace, artifacts_dir
):
    keys, port = Keys(namespace), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**service_env, **FAST}
    logs = artifacts_dir / f"resume-{namespace}"
    with running(["producer"], env, logs.with_suffix(".producer")):
        await wait_until(lambda: sredis.xlen(keys.ticks) >= 3, what="first ticks")
        chain = Chain()
        with gateway(env, port, logs.with_suffix(".gw1")) as gw:
            await wait_serving(url, gw)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                async with open_stream(client, STREAM) as sse:
                    for _ in range(5):
                        await chain.take(sse)
        left_at = chain.last.position[1]
        await wait_until(lambda: sredis.xlen(keys.ticks) >= 30 + sum(
                    1 for _ in sredis.xrange(keys.ticks, max=str(left_at))), what="ticks missed")
        with gateway(env, port, logs.with_suffix(".gw2")) as gw:
            await wait_serving(url, gw)
            reached = top(sredis, keys)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                params = {"replay": "all"}
                headers = {"Last-Event-ID": chain.last.id}
                async with open_stream(client, STREAM, params=params, headers=headers) as sse:
                    before = len(chain.events)
                    while chain.last.position[1] < reached + 40:  # the replay, then live ticks
                        await chain.take(sse)
    missed = [decode_entry(i, f) for i, f in sredis.xrange(keys.ticks, min=str(left_at + 1),
                                                            max=str(reached))]
    replayed = chain.events[before:before + len(missed)]
    assert len(missed) >= 30
    assert [b.position[1] for b in replayed] == [e.seq for e in missed]  # every tick, in order
    assert [b.json() for b in replayed] == [orjson.loads(e.raw_map) for e in missed]


async def test_default_resume_leaves_the_client_equal_to_the_cache(
    sredis, service_env, namespace, artifacts_dir
):
    keys, port = Keys(namespace), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**service_env, **FAST}
    logs = artifacts_dir / f"resume-default-{namespace}"
    chain = Chain()
    with gateway(env, port, logs.with_suffix(".gw")) as gw:
        await wait_serving(url, gw)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            with running(["producer"], env, logs.with_suffix(".p1")):
                async with open_stream(client, STREAM) as sse:
                    for _ in range(4):
                        await chain.take(sse)
                left_at = chain.last.position[1]
                await wait_until(lambda: top(sredis, keys) > left_at + 100, what="missed ticks")
            # The producer stopped: the cache holds still, so the client must equal it.
            headers = {"Last-Event-ID": chain.last.id}
            async with open_stream(client, STREAM, headers=headers) as sse:
                first = await chain.take(sse)
                assert first.position[2] == left_at and first.event is None
                assert chain.state == cache(sredis, keys)


async def test_a_wiped_redis_gives_a_reset_within_one_tick_then_live_updates(
    redis_server_factory, namespace, artifacts_dir
):
    server: RedisServer = redis_server_factory()
    keys, port, client_redis = Keys(namespace), free_port(), server.client()
    url = f"http://127.0.0.1:{port}"
    env = {"REDIS_URL": server.url, "PRICEFEED_NAMESPACE": namespace, **FAST}
    logs = artifacts_dir / f"resume-wipe-{namespace}"
    chain = Chain()
    with (running(["producer"], env, logs.with_suffix(".p")),
          gateway(env, port, logs.with_suffix(".gw")) as gw):
        await wait_serving(url, gw)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with open_stream(client, STREAM) as sse:
                for _ in range(3):
                    await chain.take(sse)
                old_epoch = chain.last.position[0]
                client_redis.flushall()
                block = await chain.take(sse)
                while block.event != "reset":  # ticks already in flight before the wipe
                    assert block.position[0] == old_epoch
                    block = await chain.take(sse)
                snapshot = await chain.take(sse)
                new_epoch = client_redis.get(keys.epoch).decode()
                assert snapshot.position[0] == new_epoch != old_epoch
                assert snapshot.position[2] == 0
                # Within one tick: the snapshot is at the first tick of the new log (or the
                # second, if another landed while the gateway read it).
                new_log = [decode_entry(i, f).seq for i, f in client_redis.xrange(keys.ticks)]
                assert snapshot.position[1] in new_log[:2]
                for _ in range(5):
                    live = await chain.take(sse)
                    assert live.position[0] == new_epoch
        assert gw.output().count("clients get a reset") == 1


async def test_an_id_trimmed_out_of_the_log_gets_a_reset(
    sredis, service_env, namespace, artifacts_dir
):
    keys, port = Keys(namespace), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**service_env, **FAST}
    logs = artifacts_dir / f"resume-trim-{namespace}"
    with (running(["producer"], env, logs.with_suffix(".p")),
          gateway(env, port, logs.with_suffix(".gw")) as gw):
        await wait_serving(url, gw)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with open_stream(client, STREAM) as sse:
                last = await sse.event()
            sredis.xtrim(keys.ticks, minid=str(last.position[1] + 1), approximate=False)
            for params in ({}, {"replay": "all"}):
                async with open_stream(client, STREAM, params=params,
                                       headers={"Last-Event-ID": last.id}) as sse:
                    assert (await sse.event()).event == "reset"
                    snapshot = await sse.event()
                    assert snapshot.position[2] == 0 and len(snapshot.json()) == 4
