"""The ASGI scope extensions through which our server (`gateway.protocol`) serves a stream.

Elsewhere (plain uvicorn, a test's ASGI transport) neither is in the scope, and a stream
works without them, at a higher cost per connection and per event
(docs/PERFORMANCE.md, "Memory per idle connection" and "The direct path").
"""

from __future__ import annotations

from typing import Final

# A function taking a callback, or None to drop it, that the connection's
# `connection_lost` calls once: no task per stream blocks in ``receive()`` for the
# disconnect (gateway/stream/response.py).
ON_DISCONNECT: Final[str] = "pricefeed.on_disconnect"

# A function returning the connection's ``(transport, flow control)`` once the response has
# started with chunked framing, else None: the hub then writes a live stream's shared
# chunk to the socket itself (gateway/stream/direct.py).
STREAM_SOCKET: Final[str] = "pricefeed.stream_socket"
