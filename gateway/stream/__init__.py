"""``GET /api/stream/prices``: everything about the SSE stream endpoint, one module a concern.

- `request`: the query (``tickers``, ``bars``, ``events``, ``replay``, ``max_hz``) and the
  resume point (``Last-Event-ID``), parsed and validated;
- `framing`: the ONLY place that builds SSE bytes (price, reset, bar, notice, delayed,
  expired, retry and ping frames);
- `events`: what one stream sends, in order: retry, the opening (snapshot, resume or
  replay), then the hub's mailbox as it fills;
- `resume`: what a resuming client missed, from the cache or the tick log;
- `response`: the HTTP response that sends those frames;
- `liveness`: keep-alive pings and the send-timeout watchdog;
- `shutdown`: the one way every stream ends when the gateway stops;
- `endpoint`: the ASGI endpoint and its route (`gateway.app.GatewayApp` sends streams to it
  before FastAPI's own stack).

Nothing is imported here, so `gateway.notices` and `gateway.bar_feed` can use `framing`
without loading the endpoint (docs/ARCHITECTURE.md).
"""
