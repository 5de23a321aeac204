"""Scenario 10: a third party publishes garbage on NS:prices, NS:price:* and NS:control.
Nothing crashes, the garbage is skipped and counted, valid traffic keeps flowing, a client
never receives a bad value, and the logs get a line per problem, not per message."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from tests.helpers.poll import wait_until
from tests.helpers.system import TICKERS, check_frame, metrics, split_frames, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

BIG = b'{"AAPL": "' + b"x" * (10 * 2**20) + b'"}'  # 10 MB


def _update(**override: object) -> dict[str, object]:
    base = {"ticker": "AAPL", "price": 1.0, "previous_price": 1.0, "timestamp": time.time(),
            "change": 0.0, "change_percent": 0.0, "direction": "flat", "seq": 1}
    return {**base, **override}


GARBAGE_UPDATES = [
    b"not json", b"", b"[]", b"null", b'"AAPL"', b"\xff\xfe\x00", b'{"AAPL": 5}',
    b'{"AAPL": {"price": NaN}}', orjson.dumps({"AAPL": _update(price=-5.0)}),
    orjson.dumps({"AAPL": _update(price="190")}), orjson.dumps({"AAPL": _update(seq=-1)}),
    orjson.dumps({"AAPL": _update(previous_price=0)}), orjson.dumps({"MSFT": _update()}),
    orjson.dumps({"A B": _update(ticker="A B")}), orjson.dumps({"AAPL": _update(seq=True)}),
    b'{"AAPL": {"ticker": "AAPL", "price": Infinity}}', BIG,
]
# Well formed, but with a seq no producer handed out (far beyond NS:seq): a client must not
# be shown it, and it must not shadow the real updates of AAPL that follow.
FORGED = orjson.dumps({"AAPL": _update(price=0.01, seq=2**62)})
GARBAGE_CONTROL = [
    b"not json", b"[]", b'{"action": "explode", "ticker": "AAPL"}',
    b'{"action": "add", "ticker": "not a ticker"}', b'{"action": "add", "ticker": 5}',
    b'{"action": "remove"}', b'{"action": ["add"], "ticker": "AAPL"}', BIG,
]
ROUNDS = 25  # the garbage again and again: one log line per problem, not per message


async def _read(url: str, frames: list[bytes], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", url + "/api/stream/prices") as response:
            buffer = b""
            async for chunk in response.aiter_bytes():
                whole, buffer = split_frames(buffer + chunk)
                frames.extend(whole)
                if stop.is_set():
                    return


def _publish_garbage(sys) -> int:
    client = sys.redis()
    keys = sys.keys
    sent = 0
    for _ in range(ROUNDS):
        for payload in GARBAGE_UPDATES:
            if payload is BIG and sent > len(GARBAGE_UPDATES):
                continue  # one 10 MB message per channel is enough
            client.publish(keys.prices, payload)
            client.publish(keys.price("AAPL"), payload)
            sent += 1
        for payload in GARBAGE_CONTROL:
            if payload is not BIG or sent <= len(GARBAGE_UPDATES):
                client.publish(keys.control, payload)
    client.publish(keys.prices, FORGED)
    client.publish(keys.price("AAPL"), FORGED)
    return sent


async def test_garbage_on_every_channel_is_skipped_counted_and_harmless(redis_server_factory):
    server = redis_server_factory()
    with system(server.url) as sys:
        url = sys.urls[0]
        frames: list[bytes] = []
        stop = asyncio.Event()
        reader = asyncio.create_task(_read(url, frames, stop))
        await wait_until(lambda: len(frames) > 3, what="first frames")
        sent = await asyncio.to_thread(_publish_garbage, sys)
        after = len(frames)
        # Valid traffic keeps flowing, for every ticker, AAPL included.
        def fresh() -> set[str]:
            return {t for f in frames[after:] for t in (check_frame(f) or {})}
        try:
            await wait_until(lambda: fresh() == set(TICKERS), timeout_s=10, what="valid ticks")
        except AssertionError as e:
            raise AssertionError(f"{e}: only {sorted(fresh())} after the garbage") from None
        stop.set()
        await asyncio.wait_for(reader, 10)
        counted = metrics(url)["pricefeed_gateway_malformed_messages_total"]
        watchlist = {m.decode() for m in sys.redis().smembers(sys.keys.watchlist)}
        assert all(s.alive() for s in [*sys.producers, *sys.gateways])
    assert counted >= sent
    assert watchlist == set(TICKERS)  # no control garbage changed it
    for frame in frames:
        for ticker, update in (check_frame(frame) or {}).items():
            assert update["seq"] < 2**62 and update["price"] > 0.01, (ticker, update)
    producer_log = sys.producers[0].log_path.read_text()
    gateway_log = sys.gateways[0].log_path.read_text()
    assert producer_log.count("WARNING") <= 3, producer_log[-2000:]
    assert gateway_log.count("WARNING") <= 3, gateway_log[-2000:]
    assert "Traceback" not in producer_log + gateway_log
