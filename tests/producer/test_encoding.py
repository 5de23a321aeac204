"""The fast tick encoder gives byte for byte what the contract's codec gives."""

from __future__ import annotations

import numpy as np

from producer.encoding import TickEncoder, encode_tick, round4
from shared.codec import decode_update, encode_map, encode_update
from shared.models import PriceUpdate


def test_matches_the_codec_for_many_random_updates() -> None:
    rng = np.random.default_rng(1)
    n = 100_000
    prices = np.round(rng.uniform(0.01, 5000, n), 2)
    previous = np.maximum(np.round(prices * np.exp(rng.normal(0, 0.01, n)), 2), 0.01)
    previous[::7] = prices[::7]  # some flat updates
    stamps = (1_764_000_000 + rng.uniform(0, 1e6, n)).tolist()
    tickers = [f"T{i}" for i in range(n)]
    payloads = encode_tick(tickers, prices, previous, stamps, 40)
    for i in range(n):
        expected = PriceUpdate(tickers[i], float(prices[i]), float(previous[i]), stamps[i], 40 + i)
        assert payloads[i] == encode_update(expected), i


def test_rounds_ties_as_python_does() -> None:
    # 14.35 / 800 · 100 is 1.79375 in decimal: numpy alone rounds it to 1.7938, Python 1.7937.
    values = np.array([14.35 / 800 * 100, 0.00005, 1.23455, -2.5e-5, 123.45675])
    assert round4(values).tolist() == [round(v, 4) for v in values.tolist()]
    payload = encode_tick(["AAPL"], np.array([814.35]), np.array([800.0]), [1.0], 1)[0]
    expected = PriceUpdate("A", 814.35, 800.0, 1, 1).change_percent
    assert decode_update(payload).change_percent == expected
    assert b'"change_percent":1.7937' in payload


def test_empty_and_single_ticks() -> None:
    assert encode_tick([], np.array([]), np.array([]), [], 1) == []
    (one,) = encode_tick(["V"], np.array([280.0]), np.array([280.0]), [2.0], 9)
    assert decode_update(one) == PriceUpdate("V", 280.0, 280.0, 2.0, 9)
    assert b'"direction":"flat"' in one


def test_with_references_matches_the_codec_and_keeps_the_old_keys_first() -> None:
    rng = np.random.default_rng(2)
    n = 20_000
    prices = np.round(rng.uniform(0.01, 5000, n), 2)
    previous = np.maximum(np.round(prices * np.exp(rng.normal(0, 0.01, n)), 2), 0.01)
    references = np.maximum(np.round(prices * np.exp(rng.normal(0, 0.03, n)), 2), 0.01)
    tickers = [f"T{i}" for i in range(n)]
    payloads = encode_tick(tickers, prices, previous, [5.0] * n, 1, references)
    for i in range(n):
        expected = PriceUpdate(tickers[i], float(prices[i]), float(previous[i]), 5.0, 1 + i,
                               float(references[i]))
        assert payloads[i] == encode_update(expected), i
        assert decode_update(payloads[i]) == expected
    assert payloads[0].index(b'"seq"') < payloads[0].index(b'"reference_price"')


def test_the_map_and_the_resp_bodies_carry_each_payload_exactly() -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    prices = np.round(rng.uniform(0.01, 5000, n), 2)
    previous = np.maximum(np.round(prices * np.exp(rng.normal(0, 0.01, n)), 2), 0.01)
    stamps = 1_764_000_000 + rng.uniform(0, 1e6, n)  # a clock per update, as Massive gives
    tickers = [f"T{i}" for i in range(n)]
    encoder = TickEncoder()
    tick = encoder.encode(tickers, prices, previous, stamps, 7)
    payloads = tick.payloads()
    for i in (0, 1, n // 2, n - 1):
        expected = PriceUpdate(tickers[i], float(prices[i]), float(previous[i]),
                               float(stamps[i]), 7 + i)
        assert payloads[i] == encode_update(expected)
    assert tick.tick_map == encode_map(decode_update(p) for p in payloads)
    leads = [b"<%d>" % i for i in range(n)]
    assert tick.bulks(leads) == b"".join(
        b"%b$%d\r\n%b\r\n" % (lead, len(p), p) for lead, p in zip(leads, payloads, strict=True))
    # The same tickers again (the layout is kept): new numbers, no trace of the old ones;
    # the prices a reversed view (not C-contiguous).
    again = encoder.encode(tickers, prices[::-1], previous, np.full(n, 5.0), 1)
    assert again.payloads()[0] == encode_update(
        PriceUpdate("T0", float(prices[-1]), float(previous[0]), 5.0, 1))
    assert tick.payloads() == payloads


def test_an_empty_tick_is_an_empty_map() -> None:
    tick = TickEncoder().encode([], np.array([]), np.array([]), np.array([]), 1)
    assert (tick.tick_map, tick.payloads(), tick.bulks([])) == (b"{}", [], b"")
