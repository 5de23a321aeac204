"""A tick's writes as native Redis commands, packed in RESP (README "The Redis contract").

What the tick transaction holds, in order (`producer.transaction` fences and sends it):
``XADD`` of the tick map to ``NS:ticks`` (and the ``MINID`` trim), ``SET NS:epoch … NX``,
one ``HSET NS:latest`` of every pair, one ``PUBLISH`` per update on its channel, the tick
map on ``NS:prices``; then, when due, the bar writes (docs/BARS.md "Consistency").

Packing 10,000 commands with one `hiredis.pack_command` call each costs ~1 µs of Python
per call; here the per-ticker parts of the RESP (the ``PUBLISH`` head with the channel, the
ticker as a field) are built once per ticker and kept, and a payload's bulk string is built
once and used by both its ``HSET`` pair and its ``PUBLISH``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import hiredis

from producer.bars import Bars
from shared.keys import Keys


def command(*args: str | bytes | int) -> bytes:
    """One command in RESP."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # the stub says 1-tuple
    return packed


def bulks(values: Iterable[bytes]) -> list[bytes]:
    """Each value as a RESP bulk string."""
    return [b"$%d\r\n%b\r\n" % (len(v), v) for v in values]


def _bulk(value: str) -> bytes:
    raw = value.encode()
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


def _interleave(a: Sequence[bytes], b: Sequence[bytes]) -> list[bytes]:
    out: list[bytes] = [b""] * (2 * len(a))
    out[0::2] = a
    out[1::2] = b
    return out


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

    def extend(self, packed: Iterable[bytes]) -> None:
        """Append single packed commands."""
        for one in packed:
            self.add(one)


class TickPacker:
    """Packs ticks of one namespace; keeps the per-ticker RESP parts."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._fields: dict[str, bytes] = {}  # ticker -> its bulk string
        self._heads: dict[str, bytes] = {}  # ticker -> PUBLISH head with its channel
        self._last: tuple[Sequence[str], list[bytes], list[bytes]] | None = None
        self._hset = _bulk(keys.latest)
        self._map_publish = b"*3\r\n$7\r\nPUBLISH\r\n" + _bulk(keys.prices)

    def tick(
        self, tickers: Sequence[str], payloads: Sequence[bytes], tick_map: bytes,
        log: tuple[str, int, str] | None, epoch: str, cached: Sequence[tuple[str, bytes]] = (),
    ) -> Commands:
        """The commands of one tick: ``log`` is (entry id, MAXLEN, MINID or '') of its
        tick-log entry, ``cached`` more cache-only pairs (the rewrite after a term starts)."""
        out = Commands()
        if tickers and log is not None:
            entry_id, most, min_id = log
            out.add(command("XADD", self.keys.ticks, "MAXLEN", "~", most, entry_id, "map",
                            tick_map))
            if min_id:
                out.add(command("XTRIM", self.keys.ticks, "MINID", min_id))
        out.epoch_at = out.count
        out.add(command("SET", self.keys.epoch, epoch, "NX"))
        fields, heads = self._parts(tickers)
        values = bulks(payloads)
        pairs = len(tickers) + len(cached)
        if pairs:
            parts = [b"*%d\r\n$4\r\nHSET\r\n%b" % (2 + 2 * pairs, self._hset),
                     *_interleave(fields, values)]
            if cached:
                parts += bulks([x for t, p in cached for x in (t.encode(), p)])
            out.add(b"".join(parts))
        if tickers:
            out.add(b"".join(_interleave(heads, values)), len(tickers))
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
                heads[t] = b"*3\r\n$7\r\nPUBLISH\r\n" + _bulk(self.keys.price_prefix + t)
        out = ([fields[t] for t in tickers], [heads[t] for t in tickers])
        self._last = (tickers, *out)
        return out

    def forget(self, tickers: Iterable[str]) -> None:
        """Drop the kept parts of removed tickers."""
        for t in tickers:
            self._fields.pop(t, None)
            self._heads.pop(t, None)
        self._last = None


def bar_commands(keys: Keys, interval: str, retention_s: int, closed: Bars,
                 forming: Bars | None, ended: Sequence[str]) -> list[bytes]:
    """One interval's bar writes (docs/BARS.md "Consistency"): per closed bar ``ZADD``, the
    trim to the retention and the ``EXPIRE``; the forming bars' ``HSET``; the ``HDEL`` of
    bars that ended without a successor; the ``PUBLISH`` of the closes."""
    out: list[bytes] = []
    closed_json = closed.encode()
    prefix = keys.bars_prefix(interval)
    for ticker, t, bar in zip(closed.tickers, closed.t.tolist(), closed_json, strict=True):
        key = prefix + ticker
        out += (command("ZADD", key, t, bar),
                command("ZREMRANGEBYSCORE", key, "-inf", t - retention_s),
                command("EXPIRE", key, retention_s))
    hash_key = keys.forming(interval)
    if forming is not None and len(forming):
        pairs = [x for t, b in zip(forming.tickers, forming.encode(), strict=True)
                 for x in (t.encode(), b)]
        out.append(command("HSET", hash_key, *pairs))
    if ended:
        out.append(command("HDEL", hash_key, *ended))
    if closed_json:
        out.append(command("PUBLISH", keys.bar_channel(interval),
                           bar_map(closed.tickers, closed_json)))
    return out


def bar_map(tickers: Iterable[str], payloads: Iterable[bytes]) -> bytes:
    """``{TICKER: bar}`` from encoded bars, without re-encoding."""
    parts = [b'"%b":%b' % (t.encode(), p) for t, p in zip(tickers, payloads, strict=True)]
    return b"{" + b",".join(parts) + b"}"
