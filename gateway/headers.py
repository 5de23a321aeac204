"""Security headers on every response, and the Host allowlist (docs/RELIABILITY.md,
"Security headers" and "Host allowlist").

Both are pure ASGI middlewares. `HostCheck` wraps nothing: it answers or passes the
request on untouched. `SecurityHeaders` wraps ``send``, one frame per message, so a stream
never goes through it (`gateway.app.GatewayApp` sends streams past the stack) and adds the
same headers itself: the SSE hot path pays nothing for it.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The page loads only its own script and style (no inline code) and a data: favicon.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers without CSP level 2
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(header: bytes) -> str:
    """The name in a Host header, lower-case, without port or IPv6 brackets."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    name = text.rpartition(":")[0] if text.count(":") == 1 else text
    return name.removesuffix(".")  # "localhost." is "localhost"


def host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """True when ``name`` is in ``allowed``; ``*`` allows any, ``.example.com`` or
    ``*.example.com`` that domain and its subdomains."""
    for entry in allowed:
        if entry == "*" or entry == name:
            return True
        suffix = entry.removeprefix("*")
        if suffix.startswith(".") and (name.endswith(suffix) or name == suffix[1:]):
            return True
    return False


class HostCheck:
    """Refuses (400, JSON) a request whose Host is not allowed: the defence against DNS
    rebinding, where a hostile page's name resolves to this gateway's address."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = allowed
        self.any = "*" in allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps({"detail": "this Host is not served here (PRICEFEED_ALLOWED_HOSTS)"})
        await send({
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS],
        })
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        if scope["path"] == "/api/health":
            return True  # liveness probes often send an IP as Host; it reveals nothing
        hosts = [v for k, v in scope["headers"] if k == b"host"]
        return len(hosts) == 1 and host_allowed(host_name(hosts[0]), self.allowed)
