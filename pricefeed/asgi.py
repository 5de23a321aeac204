"""The gateway as an ASGI factory, for uvicorn's own worker processes:

    uv run uvicorn --factory pricefeed.asgi:gateway --workers 4 \\
        --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 2 \\
        --http gateway.protocol:DefaultProtocol --no-access-log

Each worker builds its own app, so each holds its own Redis subscription and serves its
own clients. uvicorn binds the socket, so PRICEFEED_HOST/PORT are not used in this mode;
everything else comes from the environment as for `pricefeed gateway`.
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
