"""Redis down while a request is served: 503 with a JSON body and ``Retry-After``.

Without this a REST call during an outage ended with the connection reset (no answer at
all) and a traceback in the log per request.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import OutOfMemoryError, RedisError

from shared.logs import LogThrottle

log = logging.getLogger(__name__)
_throttled = LogThrottle(log, 10.0)
_oom_throttled = LogThrottle(log, 10.0)


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a request whose Redis call failed."""
    if isinstance(exc, OutOfMemoryError):  # maxmemory reached under noeviction: writes fail
        _oom_throttled.warning("Redis is out of memory while serving %s %s", request.method,
                               request.url.path)
        return JSONResponse(
            {"detail": "Redis is out of memory: it refuses writes until memory is freed"},
            status_code=503, headers={"Retry-After": "5"},
        )
    _throttled.warning("Redis unavailable while serving %s %s (%s)", request.method,
                       request.url.path, type(exc).__name__)
    return JSONResponse({"detail": "Redis is unavailable; retry shortly"}, status_code=503,
                        headers={"Retry-After": "1"})


def install(app: FastAPI) -> None:
    """Answer Redis failures in every route with `redis_unavailable`."""
    app.add_exception_handler(RedisError, redis_unavailable)
