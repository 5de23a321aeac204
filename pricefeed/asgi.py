"""The gateway as an ASGI factory, for an ASGI server you run yourself:

    uv run uvicorn --factory pricefeed.asgi:gateway --host 127.0.0.1 --port 8001 \\
        --timeout-graceful-shutdown 2 --http gateway.protocol:DefaultProtocol --no-access-log

One process per port: `/metrics` describes the process that answers, so under
``--workers`` it would show one worker's figures at random. Scale with more processes on
more ports behind the proxy (README, Running several gateways). The server binds the
socket, so PRICEFEED_HOST/PORT are not used here; everything else comes from the
environment as for `pricefeed gateway`.
"""

from __future__ import annotations

from fastapi import FastAPI

from gateway.app import create_app
from shared.logs import configure
from shared.settings import load_or_exit


def gateway() -> FastAPI:
    """A gateway app configured from the environment (called once per worker)."""
    settings = load_or_exit()
    configure(settings.log_level)
    return create_app(settings)
