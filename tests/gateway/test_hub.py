"""The hub's fan-out: conflation, shared encodings, filters, resync, seq ordering."""

from __future__ import annotations

import orjson

from gateway.hub import Batch, Hub
from gateway.stats import Stats


def item(seq: int, price: float = 1.0) -> tuple[int, bytes]:
    return seq, orjson.dumps({"price": price, "seq": seq})


def test_clients_with_the_same_view_share_one_encoded_frame():
    hub = Hub(Stats())
    a, b = hub.register(None), hub.register(None)
    f1, f2 = hub.register(frozenset({"AAPL"})), hub.register(frozenset({"AAPL"}))
    hub.publish({"AAPL": item(1), "MSFT": item(2)})
    ta, tb, t1, t2 = a.take(), b.take(), f1.take(), f2.take()
    assert isinstance(ta, Batch) and ta is tb
    assert isinstance(t1, Batch) and t1 is t2
    assert ta.frame() is tb.frame()
    assert set(t1.items) == {"AAPL"}
    assert t1.frame().startswith(b"id: 1\r\ndata: ")


def test_a_slow_client_gets_the_latest_value_per_ticker_only():
    stats = Stats()
    hub = Hub(stats)
    slow = hub.register(None)
    for seq in range(1, 101):
        hub.publish({"AAPL": item(2 * seq, seq), "MSFT": item(2 * seq + 1, seq)})
    pending = slow.take()
    assert isinstance(pending, dict)
    assert pending == {"AAPL": item(200, 100), "MSFT": item(201, 100)}
    assert stats.conflated == 2 * 99
    frame = Batch(pending).frame()
    assert frame.startswith(b"id: 201\r\n")
    assert orjson.loads(frame.split(b"data: ")[1])["AAPL"]["price"] == 100


def test_a_filtered_client_is_not_woken_for_other_tickers():
    hub = Hub(Stats())
    client = hub.register(frozenset({"TSLA"}))
    hub.publish({"AAPL": item(1)})
    assert not client.wake.is_set()
    assert client.take() is None


def test_updates_no_newer_than_seen_are_dropped():
    hub = Hub(Stats())
    hub.resync({"AAPL": item(10)})
    client = hub.register(None)
    hub.publish({"AAPL": item(9)})
    assert client.take() is None
    hub.publish({"AAPL": item(11), "MSFT": item(5)})
    taken = client.take()
    assert taken is not None and set(taken.items) == {"AAPL", "MSFT"}


def test_resync_replaces_pending_with_a_filtered_snapshot():
    hub = Hub(Stats())
    everything, some = hub.register(None), hub.register(frozenset({"MSFT"}))
    hub.publish({"AAPL": item(1)})
    hub.resync({"AAPL": item(7), "MSFT": item(8)})
    first = everything.take()
    assert first is not None and set(first.items) == {"AAPL", "MSFT"}
    assert everything.take() is None
    second = some.take()
    assert second is not None and set(second.items) == {"MSFT"}


def test_drop_older_forgets_what_a_snapshot_covered():
    hub = Hub(Stats())
    client = hub.register(None)
    hub.publish({"AAPL": item(1), "MSFT": item(2)})
    client.drop_older({"AAPL": 1, "MSFT": 1})
    taken = client.take()
    assert taken == {"MSFT": item(2)}


def test_close_wakes_every_client():
    hub = Hub(Stats())
    clients = [hub.register(None) for _ in range(3)]
    hub.close()
    assert all(c.closed and c.wake.is_set() for c in clients)


def test_the_watchdog_aborts_only_streams_blocked_past_the_timeout():
    from gateway.sse import SendWatchdog

    class FakeStream:
        def __init__(self, send_started: float) -> None:
            self.send_started = send_started
            self.aborted = False

        def abort(self) -> None:
            self.aborted = True

    now = [100.0]
    watchdog = SendWatchdog(5.0, clock=lambda: now[0])
    idle, recent, stuck = FakeStream(0.0), FakeStream(97.0), FakeStream(94.0)
    watchdog.streams.update({idle, recent, stuck})  # type: ignore[arg-type]
    assert watchdog.sweep() == 1
    assert stuck.aborted and not recent.aborted and not idle.aborted
    now[0] = 103.0
    assert watchdog.sweep() == 2  # `stuck` again (still registered) and now `recent`
    assert recent.aborted and not idle.aborted


def test_a_sequence_that_restarts_is_followed_after_a_few_stale_ticks():
    hub = Hub(Stats())
    hub.resync({"AAPL": item(5000)})
    client = hub.register(None)
    for seq in range(1, Hub.STALE_TICKS_RESET):
        hub.publish({"AAPL": item(seq)})
        assert client.take() is None  # could still be duplicates from before a snapshot
    hub.publish({"AAPL": item(Hub.STALE_TICKS_RESET)})
    taken = client.take()
    assert taken is not None and taken.items == {"AAPL": item(Hub.STALE_TICKS_RESET)}
    hub.publish({"AAPL": item(Hub.STALE_TICKS_RESET + 1)})
    assert client.take() is not None
