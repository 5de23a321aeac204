"""A real producer process follows the watchlist: control add/remove, a missed message,
a malformed one."""

from __future__ import annotations

import time

import pytest
import redis

from producer.watchlist import RESYNC_INTERVAL_S
from shared.codec import decode_map, decode_update, encode_control
from shared.keys import Keys
from tests.helpers.poll import wait_for
from tests.helpers.support import running

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FAST = {"PRICEFEED_TICK_INTERVAL": "0.05", "PRICEFEED_TICKERS": "AAPL,MSFT"}


def following(client: redis.Redis, keys: Keys) -> bool:
    return client.pubsub_numsub(keys.control)[0][1] >= 1


def messages_until(pubsub, done, timeout_s: float = 10.0) -> list[tuple[bytes, bytes]]:
    """``(channel, data)`` of the messages received until ``done(tick_maps)`` holds."""
    out, maps, deadline = [], [], time.monotonic() + timeout_s
    while not done(maps):
        assert time.monotonic() < deadline, "the producer stopped publishing"
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] == "message":
            out.append((message["channel"], message["data"]))
            if message["channel"].endswith(b":prices"):
                maps.append(decode_map(message["data"]))
    return out


def test_control_add_and_remove(sredis: redis.Redis, service_env, namespace, artifacts_dir) -> None:
    keys = Keys(namespace)
    pubsub = sredis.pubsub()
    pubsub.subscribe(keys.prices, keys.price("PYPL"))
    log = artifacts_dir / f"producer-{namespace}-control.log"
    with running(["producer"], {**service_env, **FAST}, log):
        wait_for(lambda: sredis.hlen(keys.latest) == 2, what="first tick")
        wait_for(lambda: following(sredis, keys), what="the producer following control")
        sredis.sadd(keys.watchlist, "PYPL")
        sredis.publish(keys.control, encode_control("add", "PYPL"))
        wait_for(lambda: sredis.hexists(keys.latest, "PYPL"), timeout_s=2, what="PYPL added")
        messages_until(pubsub, lambda maps: maps and "PYPL" in maps[-1])

        sredis.srem(keys.watchlist, "PYPL")
        sredis.publish(keys.control, encode_control("remove", "PYPL"))
        wait_for(lambda: not sredis.hexists(keys.latest, "PYPL"), timeout_s=2, what="PYPL gone")
        # Every tick with a newer AAPL seq than this one was written after the HDEL.
        removed_at = decode_update(sredis.hget(keys.latest, "AAPL")).seq
        later = messages_until(
            pubsub, lambda maps: sum(m["AAPL"].seq > removed_at for m in maps) >= 10
        )
        for channel, data in later:
            if channel.endswith(b":prices"):
                tick = decode_map(data)
                assert tick["AAPL"].seq <= removed_at or "PYPL" not in tick
            else:  # the PYPL channel fell silent
                assert decode_update(data).seq < removed_at
        assert not sredis.hexists(keys.latest, "PYPL")  # never written back
    pubsub.close()


def test_a_missed_message_heals_and_a_malformed_one_is_ignored(
    sredis: redis.Redis, service_env, namespace, artifacts_dir
) -> None:
    keys = Keys(namespace)
    log = artifacts_dir / f"producer-{namespace}-heal.log"
    with running(["producer"], {**service_env, **FAST}, log) as svc:
        wait_for(lambda: sredis.hlen(keys.latest) == 2, what="first tick")
        wait_for(lambda: following(sredis, keys), what="the producer following control")
        sredis.publish(keys.control, b"{not json")
        sredis.publish(keys.control, encode_control("explode", "AAPL"))
        sredis.sadd(keys.watchlist, "NFLX")  # no control message: the resync finds it
        wait_for(lambda: sredis.hexists(keys.latest, "NFLX"),
                 timeout_s=RESYNC_INTERVAL_S + 3, what="NFLX after a resync")
        assert svc.alive()
        # One line for both (a flood of them is throttled); the count is in it.
        assert svc.output().count("malformed control message") == 1
        assert sredis.hexists(keys.latest, "AAPL")
