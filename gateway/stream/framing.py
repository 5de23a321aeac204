"""Every SSE frame the gateway sends, built with sse-starlette's ``ServerSentEvent``.

The ONLY place that builds SSE bytes. The hub stores what these functions return as
opaque bytes; a price frame is built once per `Changes` and shared by every client whose
previous event was at the same position (docs/PERFORMANCE.md, "encoding once").
Event ids are those of README "Resume and continuity".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sse_starlette import ServerSentEvent

from gateway.hub import Changes
from gateway.positions import Position
from gateway.updates import EncodedUpdate, encode_updates

RETRY_FRAME = ServerSentEvent(retry=1000).encode()
PING_FRAME = ServerSentEvent(comment="ping").encode()
RESET_FRAME = ServerSentEvent(event="reset", data='{"reason": "resync"}').encode()
EXPIRED_FRAME = ServerSentEvent(
    event="expired", data='{"detail": "the access token expired; reconnect with a new one"}'
).encode()


def event_id(epoch: str, pos: Position, prev: Position) -> str:
    """An SSE event id: the epoch, the log position the event brings the client to, and
    the position of the client's previous event (0: a full snapshot, follows nothing).
    On a Cluster a position is ``v0.v1.…`` (`gateway.positions.Vector`)."""
    return f"{epoch}-{pos}-{prev}"


def price_frame(changes: Changes, epoch: str, prev: Position) -> bytes:
    """The whole price event (``id: <epoch>-<pos>-<prev>``, one ``data:`` line), cached on
    ``changes`` for the next client that needs the same one."""
    key = (epoch, prev)
    if changes.wire_key != key:
        data = encode_updates(changes.items).decode()
        changes.wire = ServerSentEvent(data=data, id=event_id(epoch, changes.pos, prev)).encode()
        changes.chunk = b""
        changes.wire_key = key
    return changes.wire


def price_chunk(changes: Changes, epoch: str, prev: Position) -> bytes:
    """`price_frame` as one HTTP/1.1 chunk (size line, frame, CRLF), cached beside it."""
    frame = price_frame(changes, epoch, prev)
    if not changes.chunk:
        changes.chunk = b"%x\r\n%b\r\n" % (len(frame), frame)
    return changes.chunk


def bar_frame(interval: str, bars: Mapping[str, bytes]) -> bytes:
    """``event: bar`` with ``{"interval": ..., "bars": {TICKER: bar}}``; no id, so a
    resuming stream's Last-Event-ID stays the price seq."""
    body = b",".join(b'"%s":%s' % (t.encode(), raw) for t, raw in bars.items())
    data = b'{"interval":"%s","bars":{%s}}' % (interval.encode(), body)
    return ServerSentEvent(data=data.decode(), event="bar").encode()


def notice_frame(kind: str, payload: Any) -> bytes:
    """One named SSE event (no ``id:``, so a resume point stays the last price's seq)."""
    return ServerSentEvent(data=orjson.dumps(payload).decode(), event=kind).encode()


def delayed_frame(items: Mapping[str, EncodedUpdate], delay_s: float) -> bytes:
    """``event: delayed`` (so no client takes it for live data), ``data`` as a price event,
    ``id`` the last seq it holds."""
    seq = max(s for s, _ in items.values())
    return ServerSentEvent(data=encode_updates(items).decode(), event="delayed",
                           id=str(seq), comment=f"delayed {delay_s:g} s").encode()
