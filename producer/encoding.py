"""Fast encoding of one tick's updates into the wire JSON (README.md, "The Redis contract").

Byte for byte what `shared.codec.encode_update` gives for the same `PriceUpdate`, but for
a whole tick at once and without a Python object per field: the derived fields are
computed with numpy, each column of numbers is formatted by ONE orjson call on its array
(the same float formatting orjson gives a Python float), carrying the JSON constant that
follows it, and the payloads come out of one ``bytes.join`` of *pieces* — a list with a
fixed number of slots per update — split at a separator no JSON here holds. The tick map
and the RESP bodies that carry every payload (``HSET`` values, per-ticker ``PUBLISH``es)
are then each one more join. Building a dict per update for orjson, then splitting and
re-joining its output, was 86 % of the producer's CPU at 10,000 tickers (py-spy); this
takes a third less CPU per update for the whole producer (docs/PERFORMANCE.md, "Producer
tick"). A join costs ~35 ns a piece, hence the constants riding with the numbers, and
what repeats (a batch's one timestamp, a ticker's reference for the day) formatted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import orjson

_NUMPY: Final[int] = orjson.OPT_SERIALIZE_NUMPY
# ',"direction":"…","seq":' by the sign of the change, -1 0 1 shifted to 0 1 2.
_DIRECTIONS = np.array([b',"direction":"%b","seq":' % d for d in (b"down", b"flat", b"up")],
                       dtype=object)
# Values this close (in units of the 4th decimal) to a rounding tie are rounded by Python.
_TIE_MARGIN = 1e-3
# The RESP bulk header of each length a payload can have (the codec caps one at 4 KiB).
BULK_HEADERS: Final[list[bytes]] = [b"$%d\r\n" % n for n in range(8 * 1024)]
_END: Final[bytes] = b"}\x00"  # closes a payload; the NUL (never in our JSON) splits them

# One update's slots in the pieces; each number carries the constant that follows it.
# The stamp slot is '<t>,"change":' (one piece when the batch has one clock); the
# reference slot ',"reference_price":<r>,"day_change_percent":', kept per ticker while the
# day's references stay.
TICKER, PRICE, PREVIOUS, STAMP, CHANGE, PERCENT, DIRECTION, SEQ = range(8)
REFERENCE, DAY = 8, 9
_STRIDE: Final[int] = 8  # slots per update; 10 with the reference pair


def round4(values: np.ndarray) -> np.ndarray:
    """``round(v, 4)`` of each value, exactly as Python's `round` gives it.

    numpy rounds ``v·10⁴`` (a product that is itself rounded), so next to a tie it can
    differ from Python, which rounds the exact decimal value (measured: 1 in 200,000, e.g.
    14.35 / 800 · 100). The few values near a tie are rounded by Python instead.
    """
    out = np.round(values, 4)
    scaled = values * 1e4
    near = np.flatnonzero(np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < _TIE_MARGIN)
    for i in near.tolist():
        out[i] = round(float(values[i]), 4)
    return out


def _json_array(column: np.ndarray) -> bytes:
    """orjson's ``[…]`` of ``column``: floats must be float64 (a float32 is written as its
    own shortest form, not as Python writes the float); a view is copied first (orjson
    takes only C-contiguous arrays)."""
    return orjson.dumps(np.ascontiguousarray(column), option=_NUMPY)


def _strings(column: np.ndarray) -> list[bytes]:
    """Each number of ``column`` as orjson writes it, from one orjson call."""
    return _json_array(column)[1:-1].split(b",")


def suffixed(column: np.ndarray, suffix: bytes) -> list[bytes]:
    """Each number of ``column`` as orjson writes it, followed by ``suffix`` (one piece
    where two would cost a join twice as much); ``suffix`` holds no byte 0x01."""
    body = _json_array(column)[1:]  # '1,2,3]': the bracket marks the end
    out = body.replace(b",", suffix + b"\x01").replace(b"]", suffix).split(b"\x01")
    return out if len(column) else []


def bulks_after(leads: Sequence[bytes], values: Sequence[bytes]) -> bytes:
    """``lead + $<len>\\r\\n<value>\\r\\n`` of each pair, joined (RESP bulk strings)."""
    pieces = _bulk_pieces(values)
    pieces[0::4] = leads
    return b"".join(pieces)


def _bulk_pieces(values: Sequence[bytes]) -> list[bytes]:
    """The pieces of `bulks_after` with their lead slots (every 4th from 0) still empty."""
    pieces: list[bytes] = [b"\r\n"] * (4 * len(values))
    pieces[1::4] = map(BULK_HEADERS.__getitem__, map(len, values))
    pieces[2::4] = values
    return pieces


def json_object(keys: Sequence[bytes], values: Sequence[bytes]) -> bytes:
    """``{k1v1,k2v2,...}`` of encoded keys (``'"T":'``) and values, in one join."""
    if not values:
        return b"{}"
    pieces: list[bytes] = [b","] * (3 * len(values))
    pieces[0::3] = keys
    pieces[1::3] = values
    pieces[0] = b"{" + pieces[0]
    pieces[-1] = b"}"
    return b"".join(pieces)


def split_joined(pieces: list[bytes]) -> list[bytes]:
    """``b"".join(pieces)`` cut after each NUL (the pieces end each item with one)."""
    out = b"".join(pieces).split(b"\x00")
    out.pop()  # after the last separator
    return out


class EncodedTick:
    """One tick's updates: each payload, the tick map, and the RESP bulks on demand."""

    def __init__(self, tickers: Sequence[str], payloads: list[bytes], map_keys: list[bytes]
                 ) -> None:
        self.tickers = tickers
        self._payloads = payloads
        self.tick_map = json_object(map_keys, payloads)
        self._bulk_pieces: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.tickers)

    def bulks(self, leads: Sequence[bytes]) -> bytes:
        """``lead + $<len>\\r\\n<payload>\\r\\n`` of every update, joined: with field bulks
        as leads, the pairs of an ``HSET``; with ``PUBLISH`` heads, the publishes. The
        pieces are kept for the next call, which only swaps the leads."""
        if self._bulk_pieces is None:
            self._bulk_pieces = _bulk_pieces(self._payloads)
        self._bulk_pieces[0::4] = leads
        return b"".join(self._bulk_pieces)

    def payloads(self) -> list[bytes]:
        """Each update's JSON on its own."""
        return self._payloads


class TickEncoder:
    """Encodes ticks; keeps the per-ticker pieces while the same tickers come back."""

    def __init__(self) -> None:
        # The tickers, their ticker slots, their map keys.
        self._layout: tuple[Sequence[str], list[bytes], list[bytes]] | None = None
        self._references: tuple[np.ndarray, list[bytes]] | None = None  # and their slots

    def encode(
        self,
        tickers: Sequence[str],
        prices: np.ndarray,
        previous: np.ndarray,
        timestamps: np.ndarray,
        first_seq: int,
        references: np.ndarray | None = None,
    ) -> EncodedTick:
        """One PriceUpdate per ticker, with seqs ``first_seq, first_seq + 1, ...``.

        ``prices``, ``previous`` and ``references`` (when given) are already rounded to cents
        and positive; ``timestamps`` are Unix seconds.
        """
        n = len(tickers)
        ticker_slots, map_keys = self._layout_of(tickers)
        if not n:
            return EncodedTick(tickers, [], map_keys)
        k = _STRIDE if references is None else _STRIDE + 2
        pieces: list[bytes] = [b""] * (k * n)
        pieces[TICKER::k] = ticker_slots
        delta = prices - previous
        change = round4(delta)
        pieces[PRICE::k] = suffixed(prices, b',"previous_price":')
        pieces[PREVIOUS::k] = suffixed(previous, b',"timestamp":')
        stamp = float(timestamps[0])
        if (timestamps == stamp).all():  # one batch, one clock: the usual case
            pieces[STAMP::k] = [orjson.dumps(stamp) + b',"change":'] * n
        else:
            pieces[STAMP::k] = suffixed(np.asarray(timestamps, dtype=np.float64), b',"change":')
        pieces[CHANGE::k] = suffixed(change, b',"change_percent":')
        pieces[PERCENT::k] = _strings(round4(change / previous * 100))
        pieces[DIRECTION::k] = _DIRECTIONS[np.sign(delta).astype(np.int8) + 1].tolist()
        seqs = np.arange(first_seq, first_seq + n, dtype=np.int64)
        if references is None:
            pieces[SEQ::k] = suffixed(seqs, _END)
        else:
            pieces[SEQ::k] = _strings(seqs)
            pieces[REFERENCE::k] = self._reference_slots(references)
            pieces[DAY::k] = suffixed(round4((prices - references) / references * 100), _END)
        return EncodedTick(tickers, split_joined(pieces), map_keys)

    def _layout_of(self, tickers: Sequence[str]) -> tuple[list[bytes], list[bytes]]:
        """The ticker slots ('{"ticker":"T","price":') and map keys of ``tickers``."""
        layout = self._layout
        if layout is not None and (layout[0] is tickers or layout[0] == tickers):
            return layout[1], layout[2]
        slots = [b'{"ticker":"%b","price":' % t.encode() for t in tickers]
        map_keys = [b'"%b":' % t.encode() for t in tickers]
        self._layout = (tickers, slots, map_keys)
        return slots, map_keys

    def _reference_slots(self, references: np.ndarray) -> list[bytes]:
        kept = self._references
        if kept is not None and (kept[0] is references or np.array_equal(kept[0], references)):
            return kept[1]
        slots = [b',"reference_price":%b,"day_change_percent":' % r for r in _strings(references)]
        self._references = (references, slots)
        return slots


def encode_tick(
    tickers: Sequence[str],
    prices: np.ndarray,
    previous: np.ndarray,
    timestamps: Sequence[float] | np.ndarray,
    first_seq: int,
    references: np.ndarray | None = None,
) -> list[bytes]:
    """Each update's JSON on its own (tests and one-off writes; a tick uses `TickEncoder`)."""
    stamps = np.asarray(timestamps, dtype=np.float64)
    return TickEncoder().encode(tickers, prices, previous, stamps, first_seq,
                                references).payloads()
