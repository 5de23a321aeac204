"""Folding every update into 1 s and 1 min OHLC bars, column-wise (docs/BARS.md).

One `BarSeries` per interval holds each ticker's forming bar in numpy columns, so a tick
of 10,000 updates is folded with a few array operations instead of 10,000 Python steps
(a per-update Python fold cost ~14 ms per tick at 10,000 tickers, measured; this ~0.5 ms).

Rules (docs/BARS.md "Folding"):
- an update goes into the bar of its own timestamp, floored to the interval (UTC-aligned);
- an update older than its ticker's forming bar (a late trade) counts in the forming bar,
  and one older than a bar already closed starts the bar after it: a closed bar never
  changes and never appears twice;
- a forming bar closes when an update of a later interval arrives for its ticker, or when
  the source's clock (the newest timestamp of a tick) has passed its end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import orjson

from producer.encoding import split_joined, suffixed
from shared.bars import INTERVALS, Bar

NONE: Final[int] = -1  # `start` of a slot with no forming bar
_NO_FLOOR: Final[int] = -(2**62)


@dataclass(frozen=True, slots=True)
class Bars:
    """Some bars of one interval as columns; ``v`` is NaN where the volume is null."""

    tickers: list[str]
    t: np.ndarray
    o: np.ndarray
    h: np.ndarray
    lo: np.ndarray
    c: np.ndarray
    n: np.ndarray
    v: np.ndarray

    def __len__(self) -> int:
        return len(self.tickers)

    def encode(self) -> list[bytes]:
        """Each bar's stored JSON (`shared.bars.encode_bar`, byte for byte), column by column
        (`producer.encoding`: a dict per bar for orjson cost ~1.2 µs a bar, measured)."""
        n = len(self.tickers)
        if not n:
            return []
        k = 8
        pieces: list[bytes] = [b'{"t":'] * (k * n)
        pieces[1::k] = suffixed(self.t, b',"o":')
        pieces[2::k] = suffixed(self.o, b',"h":')
        pieces[3::k] = suffixed(self.h, b',"l":')
        pieces[4::k] = suffixed(self.lo, b',"c":')
        pieces[5::k] = suffixed(self.c, b',"n":')
        pieces[6::k] = suffixed(self.n, b',"v":')
        if np.isnan(self.v).all():  # no source sizes: the usual case
            pieces[7::k] = [b"null}\x00"] * n
        else:
            pieces[7::k] = [b"null}\x00" if v != v else orjson.dumps(v) + b"}\x00"
                            for v in self.v.tolist()]
        return split_joined(pieces)

    def to_list(self) -> list[Bar]:
        """The bars as `Bar` objects (tests and small reads)."""
        return [
            Bar(t, o, h, lo, c, n, None if v != v else v)
            for t, o, h, lo, c, n, v in zip(
                self.t.tolist(), self.o.tolist(), self.h.tolist(), self.lo.tolist(),
                self.c.tolist(), self.n.tolist(), self.v.tolist(), strict=True,
            )
        ]


EMPTY: Final[Bars] = Bars([], *(np.zeros(0) for _ in range(7)))


class BarSeries:
    """The forming bar of every ticker at one interval."""

    def __init__(self, interval: str, capacity: int = 64) -> None:
        self.interval = interval
        self.width = INTERVALS[interval]
        self.slots: dict[str, int] = {}
        self.names: list[str] = []
        self._free: list[int] = []
        self._alloc(capacity)
        self._cache: tuple[Sequence[str], np.ndarray] | None = None

    _COLUMNS: Final = ("start", "floor", "o", "h", "lo", "c", "n", "v", "dirty")

    def _alloc(self, size: int) -> None:
        """(Re)allocate the columns for ``size`` slots, keeping what they hold."""
        old = {name: getattr(self, name) for name in self._COLUMNS} if self.names else {}
        self.start = np.full(size, NONE, np.int64)  # bar start, or NONE
        self.floor = np.full(size, _NO_FLOOR, np.int64)  # the earliest start still open
        self.o, self.h, self.lo, self.c = (np.zeros(size) for _ in range(4))
        self.n = np.zeros(size, np.int64)
        self.v = np.full(size, np.nan)
        self.dirty = np.zeros(size, bool)  # changed since last written to Redis
        for name, col in old.items():
            getattr(self, name)[: len(col)] = col

    def slot(self, ticker: str) -> int:
        """The slot of ``ticker``, allocated on first use."""
        index = self.slots.get(ticker)
        if index is None:
            if self._free:
                index = self._free.pop()
                self.names[index] = ticker
            else:
                index = len(self.names)
                self.names.append(ticker)
                if index >= len(self.start):
                    self._alloc(2 * len(self.start))
            self.slots[ticker] = index
            self._cache = None
        return index

    def slots_of(self, tickers: Sequence[str]) -> np.ndarray:
        """Slot indices of ``tickers``; cached while the same tickers come back."""
        cache = self._cache
        if cache is not None and cache[0] == tickers:
            return cache[1]
        idx = np.fromiter((self.slot(t) for t in tickers), np.int64, len(tickers))
        self._cache = (list(tickers), idx)
        return idx

    def remove(self, ticker: str) -> None:
        """Forget ``ticker`` and its forming bar."""
        index = self.slots.pop(ticker, None)
        if index is not None:
            self.start[index], self.floor[index] = NONE, _NO_FLOOR
            self.dirty[index] = False
            self._free.append(index)
            self._cache = None

    def restore(self, ticker: str, forming: Bar | None, last_closed: int | None) -> None:
        """Continue from Redis: ``forming`` is the stored forming bar, ``last_closed`` the
        start of the newest closed bar (no update may land at or before it)."""
        i = self.slot(ticker)
        self.floor[i] = _NO_FLOOR if last_closed is None else last_closed + self.width
        if forming is None or (last_closed is not None and forming.t <= last_closed):
            self.start[i] = NONE
            return
        self.start[i] = forming.t
        self.o[i], self.h[i], self.lo[i], self.c[i] = forming.o, forming.h, forming.lo, forming.c
        self.n[i] = forming.n
        self.v[i] = np.nan if forming.v is None else forming.v
        self.dirty[i] = False

    def fold(self, idx: np.ndarray, prices: np.ndarray, stamps: np.ndarray,
             volumes: np.ndarray | None) -> Bars:
        """Fold one update per slot of ``idx``; the bars this closed."""
        w = self.width
        bucket = (stamps // w).astype(np.int64) * w
        cur = self.start[idx]
        bucket = np.maximum(bucket, np.where(cur >= 0, cur, self.floor[idx]))
        new = bucket > cur
        closed = self._take(idx[new & (cur >= 0)])
        if new.all():
            self._open(idx, bucket, prices, volumes)
        elif new.any():
            same = ~new
            vol_new = vol_same = None
            if volumes is not None:
                vol_new, vol_same = volumes[new], volumes[same]
            self._open(idx[new], bucket[new], prices[new], vol_new)
            self._extend(idx[same], prices[same], vol_same)
        else:
            self._extend(idx, prices, volumes)
        self.dirty[idx] = True
        return closed

    def sweep(self, clock: float) -> tuple[Bars, list[str]]:
        """Close every forming bar whose interval ended before ``clock``; those bars, and
        the tickers left with no forming bar."""
        limit = int(clock // self.width) * self.width
        ended = np.flatnonzero((self.start >= 0) & (self.start < limit))
        closed = self._take(ended)
        self.start[ended] = NONE
        self.dirty[ended] = False
        return closed, closed.tickers

    def forming(self, everything: bool = False) -> Bars:
        """The forming bars changed since the last call (all of them with ``everything``)."""
        mask = self.start >= 0
        if not everything:
            mask &= self.dirty
        idx = np.flatnonzero(mask)
        self.dirty[idx] = False
        return self._bars(idx)

    def has_forming(self, ticker: str) -> bool:
        """Whether ``ticker`` has a forming bar."""
        i = self.slots.get(ticker)
        return i is not None and bool(self.start[i] >= 0)

    def has_dirty(self) -> bool:
        """Whether a forming bar changed since it was last taken."""
        return bool(self.dirty.any())

    def current(self, ticker: str) -> Bar | None:
        """The forming bar of ``ticker`` (tests and reads)."""
        i = self.slots.get(ticker)
        if i is None or self.start[i] < 0:
            return None
        return self._bars(np.array([i])).to_list()[0]

    def _take(self, idx: np.ndarray) -> Bars:
        """The bars at ``idx`` as closed: no later update may land at or before them."""
        bars = self._bars(idx)
        self.floor[idx] = self.start[idx] + self.width
        return bars

    def _bars(self, idx: np.ndarray) -> Bars:
        names = self.names
        return Bars([names[i] for i in idx.tolist()], self.start[idx], self.o[idx], self.h[idx],
                    self.lo[idx], self.c[idx], self.n[idx], self.v[idx])

    def _open(self, idx: np.ndarray, bucket: np.ndarray, prices: np.ndarray,
              volumes: np.ndarray | None) -> None:
        self.start[idx] = bucket
        self.o[idx] = self.h[idx] = self.lo[idx] = self.c[idx] = prices
        self.n[idx] = 1
        self.v[idx] = np.nan if volumes is None else volumes

    def _extend(self, idx: np.ndarray, prices: np.ndarray, volumes: np.ndarray | None) -> None:
        self.h[idx] = np.maximum(self.h[idx], prices)
        self.lo[idx] = np.minimum(self.lo[idx], prices)
        self.c[idx] = prices
        self.n[idx] += 1
        if volumes is not None:
            old = self.v[idx]
            self.v[idx] = np.where(np.isnan(old), volumes, old + np.nan_to_num(volumes))


class BarBook:
    """Both intervals of every ticker, and when their forming bars are due in Redis."""

    def __init__(self, forming_interval_s: float) -> None:
        self.series = {name: BarSeries(name) for name in INTERVALS}
        self.forming_interval_s = forming_interval_s
        self._forming_at = -1e18  # monotonic time of the last forming write

    def fold(self, tickers: Sequence[str], prices: np.ndarray, stamps: np.ndarray,
             volumes: np.ndarray | None) -> dict[str, tuple[Bars, list[str]]]:
        """Fold one tick; per interval, the bars it closed and the tickers whose forming
        bar ended without a successor."""
        out: dict[str, tuple[Bars, list[str]]] = {}
        clock = float(stamps.max()) if len(stamps) else None
        for name, series in self.series.items():
            closed = series.fold(series.slots_of(tickers), prices, stamps, volumes)
            ended: list[str] = []
            if clock is not None:
                swept, ended = series.sweep(clock)
                if len(swept):
                    closed = _concat(closed, swept)
            out[name] = (closed, ended)
        return out

    def forming_due(self, now: float, closed_any: bool) -> bool:
        """Write forming bars now? Always with a close, else every `forming_interval_s`."""
        if closed_any or now - self._forming_at >= self.forming_interval_s:
            self._forming_at = now
            return True
        return False

    def dirty(self) -> bool:
        """Whether some forming bar is not yet in Redis."""
        return any(s.has_dirty() for s in self.series.values())

    def remove(self, tickers: Iterable[str]) -> None:
        """Forget ``tickers`` in both intervals."""
        for ticker in tickers:
            for series in self.series.values():
                series.remove(ticker)


def _concat(a: Bars, b: Bars) -> Bars:
    if not len(a):
        return b
    return Bars(a.tickers + b.tickers, *(np.concatenate([getattr(a, f), getattr(b, f)])
                                         for f in ("t", "o", "h", "lo", "c", "n", "v")))


def merge_folds(folds: Sequence[Mapping[str, tuple[Bars, list[str]]]]
                ) -> dict[str, tuple[Bars, list[str]]]:
    """Several `BarBook.fold` results as one, in order."""
    out: dict[str, tuple[Bars, list[str]]] = {}
    for fold in folds:
        for interval, (closed, ended) in fold.items():
            have, gone = out.get(interval, (EMPTY, []))
            out[interval] = (_concat(have, closed), gone + ended)
    return out
