"""The Redis layer every pricefeed process and library consumer goes through
(docs/REDIS.md): the one client builder, the connection errors, the URL redactor, the
reader of ``NS:latest`` and the subscribe-then-snapshot session.

Named ``redisio`` so that it never shadows redis-py's own ``redis`` package.
"""

from shared.redisio.clients import (
    CONNECTION_ERRORS,
    CONSUMER,
    POOLED,
    SERVICE,
    Profile,
    cluster_topology,
    connect,
    probe,
    redacted_url,
)
from shared.redisio.latest import decode_latest, read_latest, read_latest_one
from shared.redisio.session import (
    DeliveryProbe,
    Message,
    Snapshot,
    StaleSubscription,
    honour_cancel,
    subscription,
)

__all__ = [
    "CONNECTION_ERRORS", "CONSUMER", "POOLED", "SERVICE", "DeliveryProbe", "Message",
    "Profile", "Snapshot", "StaleSubscription", "cluster_topology", "connect",
    "decode_latest", "honour_cancel", "probe", "read_latest", "read_latest_one",
    "redacted_url", "subscription",
]
