"""The hub's fan-out: conflation, shared encodings, filters, resync, positions, epochs."""

from __future__ import annotations

import orjson

from gateway.hub import Changes, Hub
from gateway.stats import Stats
from gateway.stream.framing import price_frame

E1, E2 = "0123456789abcdef", "fedcba9876543210"


def item(seq: int, price: float = 1.0) -> tuple[int, bytes]:
    return seq, orjson.dumps({"price": price, "seq": seq})


def tick(hub: Hub, **seqs: int) -> None:
    """One tick at the position of its largest seq, as the subscriber hands it over."""
    hub.publish({t: item(s) for t, s in seqs.items()}, max(seqs.values()))


def test_clients_with_the_same_view_share_one_encoded_frame():
    hub = Hub(Stats())
    a, b = hub.register(None), hub.register(None)
    f1, f2 = hub.register(frozenset({"AAPL"})), hub.register(frozenset({"AAPL"}))
    hub.resync({}, E1, 0)
    for client in (a, b, f1, f2):
        client.take()  # the (empty) snapshot
    tick(hub, AAPL=1, MSFT=2)
    ta, tb, t1, t2 = a.take(), b.take(), f1.take(), f2.take()
    assert isinstance(ta, Changes) and ta is tb
    assert isinstance(t1, Changes) and t1 is t2
    assert price_frame(ta, E1, 0) is price_frame(tb, E1, 0)
    assert set(t1.items) == {"AAPL"}
    # The position is the tick's, not the filtered batch's largest seq.
    assert price_frame(t1, E1, 0).startswith(b"id: %s-2-0\r\ndata: " % E1.encode())


def test_a_slow_client_gets_the_latest_value_per_ticker_only():
    stats = Stats()
    hub = Hub(stats)
    slow = hub.register(None)
    for seq in range(1, 101):
        hub.publish({"AAPL": item(2 * seq, seq), "MSFT": item(2 * seq + 1, seq)}, 2 * seq + 1)
    pending = slow.take()
    assert pending is not None
    assert pending.items == {"AAPL": item(200, 100), "MSFT": item(201, 100)}
    assert stats.conflated == 2 * 99
    frame = price_frame(pending, E1, 0)
    assert frame.startswith(b"id: %s-201-0\r\n" % E1.encode())
    assert orjson.loads(frame.split(b"data: ")[1])["AAPL"]["price"] == 100


def test_a_filtered_client_is_not_woken_for_other_tickers():
    hub = Hub(Stats())
    client = hub.register(frozenset({"TSLA"}))
    tick(hub, AAPL=1)
    assert not client.wake.is_set()
    assert client.take() is None


def test_ticks_at_or_below_the_snapshot_position_are_dropped():
    hub = Hub(Stats())
    hub.resync({"AAPL": item(10)}, E1, 10)
    client = hub.register(None)
    tick(hub, AAPL=9)
    tick(hub, AAPL=10)
    assert client.take() is None
    tick(hub, MSFT=11, AAPL=12)
    taken = client.take()
    assert taken is not None and set(taken.items) == {"AAPL", "MSFT"} and taken.pos == 12


def test_resync_replaces_pending_with_a_filtered_snapshot():
    hub = Hub(Stats())
    everything, some = hub.register(None), hub.register(frozenset({"MSFT"}))
    tick(hub, AAPL=1)
    hub.resync({"AAPL": item(7), "MSFT": item(8)}, E1, 8)
    first = everything.take()
    assert first is not None and set(first.items) == {"AAPL", "MSFT"} and first.pos == 8
    assert everything.take() is None
    second = some.take()
    assert second is not None and set(second.items) == {"MSFT"}
    assert not everything.reset  # the same dataset: a catch-up, not a reset


def test_a_resync_under_another_epoch_is_a_reset_for_every_client():
    hub = Hub(Stats())
    hub.resync({"AAPL": item(7)}, E1, 7)
    client, other = hub.register(None), hub.register(frozenset({"TSLA"}))
    tick(hub, AAPL=8)
    client.take()
    client.last_pos = 8
    hub.resync({"AAPL": item(3)}, E2, 3)  # a wiped Redis: seqs and positions start over
    assert client.reset and other.reset and client.last_pos == 0
    snapshot = client.take()
    assert snapshot is not None and snapshot.items == {"AAPL": item(3)}
    empty = other.take()  # sent even when empty: the client must drop its old state
    assert empty is not None and empty.items == {}
    tick(hub, AAPL=4)  # the new sequence is followed at once
    assert client.take() is not None


def test_a_resync_whose_log_ends_before_the_last_tick_sent_is_a_reset():
    # A Sentinel failover to a replica that missed the last ticks (replication is
    # asynchronous): same epoch, but the snapshot is older than what clients were sent.
    hub = Hub(Stats())
    hub.resync({"AAPL": item(7)}, E1, 7)
    client = hub.register(None)
    tick(hub, AAPL=9)
    client.take()
    client.last_pos = 9
    hub.resync({"AAPL": item(8)}, E1, 8)
    assert client.reset and client.last_pos == 0
    snapshot = client.take()
    assert snapshot is not None and snapshot.items == {"AAPL": item(8)}
    tick(hub, AAPL=1030)  # the producer goes on above every seq it handed out
    assert client.take() is not None


def test_cover_forgets_what_a_snapshot_or_replay_covered():
    hub = Hub(Stats())
    client = hub.register(None)
    tick(hub, AAPL=1, MSFT=2)
    client.cover(1)
    taken = client.take()
    assert taken is not None and taken.items == {"MSFT": item(2)}
    client.cover(5)
    tick(hub, AAPL=4, MSFT=5)  # arrived late: already covered
    assert client.take() is None
    tick(hub, AAPL=6)
    assert client.take() is not None


def test_close_wakes_every_client():
    hub = Hub(Stats())
    clients = [hub.register(None) for _ in range(3)]
    hub.close()
    assert all(c.closed and c.wake.is_set() for c in clients)


def test_the_watchdog_aborts_only_streams_blocked_past_the_timeout():
    from gateway.stream.liveness import SendWatchdog

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


def test_a_resync_of_the_same_dataset_sends_only_what_changed_and_keeps_pending():
    # The gateway resubscribed after losing its subscription (a failover, a cut-off): a
    # client that already holds AAPL 7 must not get it again (no duplicate seq).
    hub = Hub(Stats())
    hub.resync({"AAPL": item(7), "MSFT": item(6)}, E1, 7)
    client, msft_only, tsla_only = (hub.register(None), hub.register(frozenset({"MSFT"})),
                                    hub.register(frozenset({"TSLA"})))
    for c in (client, msft_only, tsla_only):
        c.take()
        c.last_pos = 7
    tick(hub, TSLA=8)  # marked, not sent yet
    hub.resync({"AAPL": item(7), "MSFT": item(9), "TSLA": item(8)}, E1, 9)
    assert not client.reset
    caught_up = client.take()
    assert caught_up is not None and caught_up.pos == 9
    assert caught_up.items == {"TSLA": item(8), "MSFT": item(9)}  # AAPL 7 not sent again
    only = msft_only.take()
    assert only is not None and only.items == {"MSFT": item(9)}
    assert tsla_only.take() is not None  # its pending TSLA 8, nothing more
    tick(hub, AAPL=9)  # at or below the catch-up's position: covered
    assert client.take() is None


def test_a_client_that_never_got_a_snapshot_gets_the_whole_one_on_a_same_epoch_resync():
    hub = Hub(Stats())
    hub.resync({"AAPL": item(7)}, E1, 7)
    waiting = hub.register(None)  # opened while Redis was down: nothing sent yet
    hub.resync({"AAPL": item(7), "MSFT": item(8)}, E1, 8)
    snapshot = waiting.take()
    assert snapshot is not None and snapshot.items == {"AAPL": item(7), "MSFT": item(8)}


def test_a_catch_up_merges_into_a_snapshot_not_yet_sent():
    hub = Hub(Stats())
    hub.resync({"AAPL": item(7)}, E1, 7)
    client = hub.register(None)
    client.last_pos = 7
    hub.resync({"AAPL": item(7), "MSFT": item(8)}, E2, 8)  # reset: a whole snapshot due
    client.last_pos = 5  # a client with a position and a snapshot still unsent
    hub.resync({"AAPL": item(9), "MSFT": item(8)}, E2, 9)
    taken = client.take()
    assert taken is not None and taken.items == {"AAPL": item(9), "MSFT": item(8)}
    assert client.take() is None
