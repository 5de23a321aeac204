"""The expiry timer of a stream lives only as long as the stream: a client that leaves
before its token expires must not stay referenced from the event loop until then."""

from __future__ import annotations

import asyncio

from gateway.hub import Hub
from gateway.stats import Stats


async def test_forgetting_a_client_cancels_its_expiry_timer():
    hub = Hub(Stats())
    client = hub.register(None)
    fired = []
    client.expiry = asyncio.get_running_loop().call_later(0.05, fired.append, client)
    handle = client.expiry
    hub.unregister(client)
    assert handle.cancelled() and client.expiry is None
    await asyncio.sleep(0.1)  # past the timer's due time: it must not have run
    assert fired == []
