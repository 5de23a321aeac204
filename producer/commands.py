"""A tick's writes as native Redis commands, packed in RESP (README "The Redis contract").

What the tick transaction holds, in order (`producer.transaction` fences and sends it):
``XADD`` of the tick map to ``NS:ticks`` (and the ``MINID`` trim), ``SET NS:epoch … NX``,
one ``HSET NS:latest`` of every pair, one ``PUBLISH`` per update on its channel, the tick
map on ``NS:prices``; then, when due, the bar writes (docs/BARS.md "Consistency"). On a
Cluster (a sharded `Keys`) each publish is an ``SPUBLISH`` on the partition's shard
channel instead, in the same slot as the rest (docs/CLUSTER.md).

Packing 10,000 commands with one `hiredis.pack_command` call each costs ~1 µs of Python
per call; here the per-ticker parts of the RESP (the ``PUBLISH`` head with the channel, the
ticker as a field) are built once per ticker and kept, and the ``HSET`` pairs and the
``PUBLISH``es are each one join of those parts with the tick's encoded pieces
(`producer.encoding.EncodedTick.bulks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import hiredis
import numpy as np

from producer.bars import Bars
from producer.encoding import BULK_HEADERS, EncodedTick, bulks_after, json_object
from shared.bars import INTERVALS
from shared.keys import Keys


def command(*args: str | bytes | int) -> bytes:
    """One command in RESP."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # the stub says 1-tuple
    return packed


def _bulk(value: str) -> bytes:
    raw = value.encode()
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


def publish_verb(keys: Keys) -> str:
    """``SPUBLISH`` on a Cluster (shard channels: docs/CLUSTER.md), else ``PUBLISH``."""
    return "SPUBLISH" if keys.sharded else "PUBLISH"


def _publish_head(keys: Keys, channel: str) -> bytes:
    """The RESP of a 3-argument publish on ``channel``, without the message."""
    return b"*3\r\n" + _bulk(publish_verb(keys)) + _bulk(channel)


@dataclass
class Commands:
    """Packed commands in order; ``count`` of them (a part may hold several)."""

    parts: list[bytes] = field(default_factory=list)
    count: int = 0
    epoch_at: int = -1  # where the reply of ``SET NS:epoch … NX`` is, in a tick

    def add(self, packed: bytes, count: int = 1) -> None:
        """Append ``count`` packed commands."""
        self.parts.append(packed)
        self.count += count


class TickPacker:
    """Packs ticks of one namespace; keeps the per-ticker RESP parts."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._fields: dict[str, bytes] = {}  # ticker -> its bulk string
        self._heads: dict[str, bytes] = {}  # ticker -> PUBLISH head with its channel
        self._last: tuple[Sequence[str], list[bytes], list[bytes]] | None = None
        self._hset = _bulk(keys.latest)
        self._map_publish = _publish_head(keys, keys.prices)

    def tick(
        self, encoded: EncodedTick, log: tuple[str, int, str] | None, epoch: str,
        cached: Sequence[tuple[str, bytes]] = (),
    ) -> Commands:
        """The commands of one tick: ``log`` is (entry id, MAXLEN, MINID or '') of its
        tick-log entry, ``cached`` more cache-only pairs (the rewrite after a term starts)."""
        out = Commands()
        tickers, tick_map = encoded.tickers, encoded.tick_map
        if tickers and log is not None:
            entry_id, most, min_id = log
            out.add(command("XADD", self.keys.ticks, "MAXLEN", "~", most, entry_id, "map",
                            tick_map))
            if min_id:
                out.add(command("XTRIM", self.keys.ticks, "MINID", min_id))
        out.epoch_at = out.count
        out.add(command("SET", self.keys.epoch, epoch, "NX"))
        fields, heads = self._parts(tickers)
        pairs = len(tickers) + len(cached)
        if pairs:
            parts = [b"*%d\r\n$4\r\nHSET\r\n%b" % (2 + 2 * pairs, self._hset),
                     encoded.bulks(fields)]
            if cached:
                parts.append(bulks_after([_bulk(t) for t, _ in cached], [p for _, p in cached]))
            out.add(b"".join(parts))
        if tickers:
            out.add(encoded.bulks(heads), len(tickers))
            out.add(self._map_publish + b"$%d\r\n%b\r\n" % (len(tick_map), tick_map))
        return out

    def _parts(self, tickers: Sequence[str]) -> tuple[list[bytes], list[bytes]]:
        """The field bulks and PUBLISH heads of ``tickers`` (kept while they repeat)."""
        last = self._last
        if last is not None and (last[0] is tickers or last[0] == tickers):
            return last[1], last[2]
        fields, heads = self._fields, self._heads
        for t in tickers:
            if t not in fields:
                fields[t] = _bulk(t)
                heads[t] = _publish_head(self.keys, self.keys.price_prefix + t)
        out = ([fields[t] for t in tickers], [heads[t] for t in tickers])
        self._last = (tickers, *out)
        return out

    def forget(self, tickers: Iterable[str]) -> None:
        """Drop the kept parts of removed tickers."""
        for t in tickers:
            self._fields.pop(t, None)
            self._heads.pop(t, None)
        self._last = None


class BarPacker:
    """Packs the bar writes of one namespace; keeps each ticker's RESP parts per interval."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        # (interval, ticker) -> ZADD head, ZREMRANGEBYSCORE head, EXPIRE head (each with the
        # ticker's sorted set), the field bulk, the bar map key
        self._parts: dict[tuple[str, str], tuple[bytes, bytes, bytes, bytes, bytes]] = {}

    def commands(self, interval: str, retention_s: int, closed: Bars, forming: Bars | None,
                 ended: Sequence[str]) -> Commands:
        """One interval's bar writes (docs/BARS.md "Consistency"): per closed bar ``ZADD``,
        the trim to the retention and the ``EXPIRE``; the forming bars' ``HSET``; the
        ``HDEL`` of bars that ended without a successor; the ``PUBLISH`` of the closes."""
        out = Commands()
        closed_json = closed.encode()
        n = len(closed_json)
        if n:
            parts = [self._parts_of(interval, t) for t in closed.tickers]
            starts, at = np.unique(closed.t, return_inverse=True)
            scores = np.array([_bulk(str(t)) for t in starts.tolist()], dtype=object)
            cutoffs = np.array([_bulk(str(t - retention_s)) for t in starts.tolist()],
                               dtype=object)
            pieces: list[bytes] = [_bulk(str(retention_s))] * (8 * n)
            pieces[0::8] = [p[0] for p in parts]
            pieces[1::8] = scores[at].tolist()
            pieces[2::8] = map(BULK_HEADERS.__getitem__, map(len, closed_json))
            pieces[3::8] = closed_json
            pieces[4::8] = [p[1] for p in parts]
            pieces[5::8] = cutoffs[at].tolist()
            pieces[6::8] = [p[2] for p in parts]
            out.add(b"".join(pieces), 3 * n)
        hash_key = _bulk(self.keys.forming(interval))
        if forming is not None and len(forming):
            fields = [self._parts_of(interval, t)[3] for t in forming.tickers]
            out.add(b"*%d\r\n$4\r\nHSET\r\n%b%b" % (
                2 + 2 * len(fields), hash_key, bulks_after(fields, forming.encode())))
        if ended:
            out.add(command("HDEL", self.keys.forming(interval), *ended))
        if n:
            keys = [self._parts_of(interval, t)[4] for t in closed.tickers]
            out.add(command(publish_verb(self.keys), self.keys.bar_channel(interval),
                            json_object(keys, closed_json)))
        return out

    def _parts_of(self, interval: str, ticker: str) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        parts = self._parts.get((interval, ticker))
        if parts is None:
            key = _bulk(self.keys.bars(interval, ticker))
            parts = (b"*4\r\n$4\r\nZADD\r\n" + key,
                     b"\r\n*4\r\n$16\r\nZREMRANGEBYSCORE\r\n" + key + b"$4\r\n-inf\r\n",
                     b"*3\r\n$6\r\nEXPIRE\r\n" + key, _bulk(ticker), b'"%b":' % ticker.encode())
            self._parts[(interval, ticker)] = parts
        return parts

    def forget(self, tickers: Iterable[str]) -> None:
        """Drop the kept parts of removed tickers."""
        for t in tickers:
            for interval in INTERVALS:
                self._parts.pop((interval, t), None)
