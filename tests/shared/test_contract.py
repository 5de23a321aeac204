"""The wire contract: model derivations, codec validation, key names, settings."""

from __future__ import annotations

import math

import orjson
import pytest

from shared.codec import (
    MAX_MAP_BYTES,
    MAX_UPDATE_BYTES,
    decode_control,
    decode_map,
    decode_update,
    encode_control,
    encode_map,
    encode_update,
)
from shared.errors import CodecError, SettingsError
from shared.keys import Keys
from shared.models import InvalidTicker, PriceUpdate, normalize_ticker
from shared.settings import Secret, Settings

KEY_ORDER = ["ticker", "price", "previous_price", "timestamp", "change",
             "change_percent", "direction", "seq"]


def test_update_derives_change_fields_with_spec_rounding() -> None:
    u = PriceUpdate.create("AAPL", 190.123, 190.0, 1.5, 7)
    assert (u.price, u.previous_price) == (190.12, 190.0)
    assert u.change == 0.12
    assert u.change_percent == round(0.12 / 190.0 * 100, 4)
    assert u.direction == "up"
    assert list(u.to_dict()) == KEY_ORDER


def test_first_update_is_flat_and_zero_previous_gives_zero_percent() -> None:
    first = PriceUpdate.create("MSFT", 420.0, None, 1.0, 1)
    assert first.previous_price == first.price and first.direction == "flat"
    assert PriceUpdate("X", 1.0, 0.0, 1.0, 1).change_percent == 0.0
    assert PriceUpdate("X", 1.0, 2.0, 1.0, 1).direction == "down"


def test_update_is_frozen_and_slotted() -> None:
    u = PriceUpdate.create("V", 280.0, None, 1.0, 1)
    with pytest.raises(AttributeError):
        u.price = 1.0  # type: ignore[misc]
    assert not hasattr(u, "__dict__")


def test_codec_round_trips_one_update_and_a_map() -> None:
    a = PriceUpdate.create("AAPL", 191.0, 190.0, 1700000000.25, 11)
    b = PriceUpdate.create("NVDA", 799.5, 800.0, 1700000000.25, 12)
    assert decode_update(encode_update(a)) == a
    assert list(orjson.loads(encode_update(a))) == KEY_ORDER
    assert decode_map(encode_map([a, b])) == {"AAPL": a, "NVDA": b}


def _good() -> dict:
    return PriceUpdate.create("AAPL", 191.0, 190.0, 1700000000.0, 3).to_dict()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("price"),
        lambda d: d.pop("seq"),
        lambda d: d.update(price="191"),
        lambda d: d.update(price=True),
        lambda d: d.update(price=-1.0),
        lambda d: d.update(price=0),
        lambda d: d.update(previous_price=0.0),
        lambda d: d.update(seq=1.5),
        lambda d: d.update(seq=-1),
        lambda d: d.update(ticker="aapl"),
        lambda d: d.update(ticker="AAPL\n"),
        lambda d: d.update(ticker=["AAPL"]),
        lambda d: d.update(direction="sideways"),
        lambda d: d.update(timestamp="now"),
        lambda d: d.update(change=None),
    ],
)
def test_decode_rejects_malformed_fields(mutate) -> None:
    d = _good()
    mutate(d)
    with pytest.raises(CodecError):
        decode_update(orjson.dumps(d))


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[1,2]", b"null", b'{"ticker": "AAPL"}',
     b'{"ticker":"AAPL","price":NaN}', b'{"ticker":"AAPL","price":Infinity}'],
)
def test_decode_rejects_bad_json(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_update(payload)


def test_decode_rejects_non_finite_price_even_if_json_parser_allowed_it() -> None:
    d = _good()
    d["price"] = math.inf
    with pytest.raises(CodecError):
        decode_update(orjson.dumps(d).replace(b"null", b"1e999"))


def test_decode_rejects_oversized_payloads() -> None:
    with pytest.raises(CodecError, match="exceeds"):
        decode_update(b" " * (MAX_UPDATE_BYTES + 1))
    with pytest.raises(CodecError, match="exceeds"):
        decode_map(b" " * (MAX_MAP_BYTES + 1))


def test_decode_map_rejects_mismatched_key_and_non_object() -> None:
    u = PriceUpdate.create("AAPL", 191.0, 190.0, 1.0, 3)
    with pytest.raises(CodecError):
        decode_map(orjson.dumps({"MSFT": u.to_dict()}))
    with pytest.raises(CodecError):
        decode_map(b"[]")


def test_control_round_trip_and_rejections() -> None:
    assert decode_control(encode_control("add", "PYPL")) == ("add", "PYPL")
    for bad in (b'{"action":"drop","ticker":"PYPL"}', b'{"action":"add","ticker":"*"}',
                b'{"action":"add"}', b"garbage", b'"add"'):
        with pytest.raises(CodecError):
            decode_control(bad)


def test_keys_are_namespaced() -> None:
    k = Keys("ns")
    assert (k.latest, k.prices, k.price("AAPL"), k.watchlist, k.control, k.seq, k.producer) == (
        "ns:latest", "ns:prices", "ns:price:AAPL", "ns:watchlist", "ns:control", "ns:seq",
        "ns:producer",
    )


@pytest.mark.parametrize("raw,expected", [(" pypl ", "PYPL"), ("brk.b", "BRK.B"), ("x", "X")])
def test_normalize_ticker_accepts(raw: str, expected: str) -> None:
    assert normalize_ticker(raw) == expected


@pytest.mark.parametrize("raw", ["", "1ABC", "A" * 11, "AA PL", "A*", "A\nB", "ÄPL", "../x", 5])
def test_normalize_ticker_rejects(raw) -> None:
    with pytest.raises(InvalidTicker):
        normalize_ticker(raw)


def test_settings_defaults_and_parsing() -> None:
    s = Settings.from_env({"PRICEFEED_TICKERS": "aapl, msft,AAPL", "PRICEFEED_SEED": "7"})
    assert s.tickers == ("AAPL", "MSFT") and s.seed == 7
    assert s.tick_interval_s == 0.5 and s.namespace == "pricefeed" and not s.use_massive
    assert Settings.from_env({"MASSIVE_API_KEY": "  "}).use_massive is False


@pytest.mark.parametrize(
    "name,value",
    [("REDIS_URL", "http://x"), ("PRICEFEED_TICK_INTERVAL", "0"),
     ("PRICEFEED_TICK_INTERVAL", "nan"), ("PRICEFEED_PORT", "70000"),
     ("PRICEFEED_TICKERS", "AAPL,$$"), ("PRICEFEED_SEED", "x"), ("PRICEFEED_MAX_CLIENTS", "0"),
     ("PRICEFEED_NAMESPACE", "a b"), ("PRICEFEED_MASSIVE_MODE", "ftp"),
     ("PRICEFEED_CORS_ORIGINS", "example.com"), ("PRICEFEED_MASSIVE_WS_URL", "http://x")],
)
def test_settings_error_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert str(info.value).startswith(name) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name,value,says",
    [("PRICEFEED_TICKERS", "AAPL, 1bad ,MSFT", "'1bad' is not a ticker"),
     ("PRICEFEED_TICK_INTERVAL", "fast", "expected a number of seconds between 0.01 and 60"),
     ("PRICEFEED_PORT", "http", "expected a whole number between 1 and 65535")],
)
def test_settings_error_says_what_is_wrong_in_the_users_terms(
        name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert says in str(info.value)
    assert "convert" not in str(info.value) and "literal" not in str(info.value)


def test_secrets_never_show_in_repr() -> None:
    s = Settings.from_env({"MASSIVE_API_KEY": "sk-live-123", "PRICEFEED_API_TOKEN": "tok-456"})
    assert s.use_massive and s.massive_api_key.get() == "sk-live-123"
    text = repr(s) + str(s.api_token) + f"{s.massive_api_key}"
    assert "sk-live-123" not in text and "tok-456" not in text
    assert repr(Secret("")) == "Secret('')"


def test_the_reference_pair_comes_last_and_readers_of_old_updates_keep_working() -> None:
    u = PriceUpdate.create("AAPL", 191.0, 190.0, 1.0, 3, reference_price=189.004)
    wire = orjson.loads(encode_update(u))
    assert list(wire) == [*KEY_ORDER, "reference_price", "day_change_percent"]
    assert wire["reference_price"] == 189.0
    assert wire["day_change_percent"] == round(2.0 / 189.0 * 100, 4)
    assert decode_update(encode_update(u)) == u
    old = PriceUpdate.create("AAPL", 191.0, 190.0, 1.0, 3)  # from a producer before the field
    assert list(old.to_dict()) == KEY_ORDER and old.day_change_percent is None
    assert decode_update(encode_update(old)).reference_price is None
    assert decode_update(orjson.dumps({**old.to_dict(), "reference_price": None})) == old


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(reference_price=0), lambda d: d.update(reference_price="1"),
    lambda d: d.update(reference_price=-3.0), lambda d: d.pop("day_change_percent"),
    lambda d: d.update(day_change_percent="1%"),
])
def test_decode_rejects_a_malformed_reference(mutate) -> None:
    d = PriceUpdate.create("AAPL", 191.0, 190.0, 1.0, 3, reference_price=189.0).to_dict()
    mutate(d)
    with pytest.raises(CodecError):
        decode_update(orjson.dumps(d))


def test_reference_key_is_namespaced_per_utc_day() -> None:
    assert Keys("ns").reference("2026-12-02") == "ns:reference:2026-12-02"
