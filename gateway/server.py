"""``pricefeed gateway``: the app under uvicorn on a socket we bind ourselves.

The listening socket gets a small SO_SNDBUF (accepted sockets inherit it on Linux), so a
client whose socket stays blocked fills the kernel buffer quickly and is found by the
send timeout within seconds, instead of parking megabytes in kernel memory (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import socket
import sys

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.cluster.wiring import check_before_start
from gateway.protocol import HttpLimits, guarded_protocol
from gateway.stream.shutdown import shutdown_of
from shared.errors import SettingsError
from shared.logs import configure
from shared.redisio import redacted_url
from shared.settings import Settings, is_loopback, load_or_exit
from shared.version import VERSION

log = logging.getLogger(__name__)
SEND_BUFFER_BYTES = 32 * 1024
BACKLOG = 4096
GRACEFUL_SHUTDOWN_S = 1
# CPython's full collections walk every live object; with 10,000 clients one took long
# enough to stall the hub past the latency target (docs/PERFORMANCE.md). Collect young objects less
# often and freeze everything that exists after startup out of the collector's sight.
GC_THRESHOLDS = (50_000, 20, 100)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, ending every SSE stream before it waits for connections."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        shutdown_of(self.app).begin()  # before uvicorn waits for the streams to end
        await super().shutdown(sockets)
        # uvicorn re-raises the caught SIGTERM/SIGINT once served: exit status -15, or a
        # KeyboardInterrupt traceback on Ctrl+C. A graceful stop is a success: exit 0.
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.freeze()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket with a small send buffer; OSError when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str]) -> int:
    """Run the gateway until SIGTERM / Ctrl+C."""
    argparse.ArgumentParser(
        prog="pricefeed gateway", description="Serve Redis prices to browsers over SSE."
    ).parse_args(argv)
    settings = load_or_exit()
    configure(settings.log_level)
    if settings.clustered:
        try:
            asyncio.run(check_before_start(settings))
        except SettingsError as e:
            print(f"pricefeed: configuration error: {e}", file=sys.stderr)
            return 2
    try:
        sock = bind(settings.host, settings.port)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, e.strerror or e)
        return 1
    gc.set_threshold(*GC_THRESHOLDS)
    app = create_app(settings)
    limits = HttpLimits(head_timeout_s=settings.request_timeout_s,
                        body_timeout_s=settings.request_timeout_s)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, backlog=BACKLOG,
        http=guarded_protocol(limits),
    )
    server = GatewayServer(config, app)
    log.info("gateway (pricefeed %s) listening on http://%s:%d: Redis %s, namespace %r",
             VERSION, settings.host, settings.port, redacted_url(settings.redis_url),
             settings.namespace)
    warn_if_exposed(settings)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 3


def warn_if_exposed(settings: Settings) -> None:
    """One warning when other machines can reach a gateway whose watchlist anyone may edit."""
    if is_loopback(settings.host) or settings.api_token:
        return
    log.warning("listening on %s with no PRICEFEED_API_TOKEN: anyone who can reach port %d "
                "can add and remove tickers; set PRICEFEED_API_TOKEN (README: Running in "
                "production)", settings.host, settings.port)
