"""Bearer-token check for watchlist writes (``PRICEFEED_API_TOKEN``)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def require_token(request: Request) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (when a token is set).

    ``hmac.compare_digest`` so the comparison's time does not reveal the token.
    """
    token = request.app.state.gateway.settings.api_token.get()
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    valid = hmac.compare_digest(given.strip().encode(), token.encode())
    if scheme.lower() != "bearer" or not valid:
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
