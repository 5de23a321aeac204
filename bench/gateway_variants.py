"""`pricefeed gateway` with uvicorn's stock HTTP protocol instead of the gateway's guarded
one (gateway/protocol.py), to measure what the guard costs the fan-out:

    python -m bench.gateway_variants httptools   # the gateway before the guard
    python -m bench.gateway_variants h11         # h11: a head limit, no read deadlines

and the gateway's own protocol with the direct path off, every event sent by the stream's
task (gateway/stream/direct.py), to measure what the direct path saves:

    python -m bench.gateway_variants task

Everything else — settings from the environment, the socket, the app — is
`gateway.server.main`'s.
"""

from __future__ import annotations

import sys
from typing import Any

import gateway.server
from gateway.protocol import GuardedProtocol


def _no_socket(self: GuardedProtocol) -> None:
    return None  # no stream is offered its socket: every event goes through its task

VARIANTS = ("httptools", "h11", "task")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in VARIANTS:
        print(f"usage: python -m bench.gateway_variants {'|'.join(VARIANTS)}", file=sys.stderr)
        return 2
    variant = argv[0]
    if variant == "task":
        GuardedProtocol.stream_socket = _no_socket  # type: ignore[method-assign]
        return gateway.server.main([])

    def stock(_limits: Any) -> str:
        return variant  # uvicorn.Config(http="httptools" | "h11")

    gateway.server.guarded_protocol = stock  # type: ignore[attr-defined,assignment]
    return gateway.server.main([])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
