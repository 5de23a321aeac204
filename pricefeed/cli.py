"""`pricefeed` console script: one subcommand per role.

Each subcommand's module is imported only when chosen, so `pricefeed producer` never
loads the gateway's dependencies and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from shared.version import VERSION

# subcommand -> (module, help). Each module has `main(argv: list[str]) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("pricefeed.up", "run Redis, a producer and a gateway on this machine (no Docker)"),
    "producer": ("producer.service", "run the producer: prices into Redis"),
    "gateway": ("gateway.server", "run the gateway: Redis to browsers over SSE"),
    "watch": ("pricefeed.watch", "a live terminal dashboard reading Redis directly"),
    "token": ("pricefeed.token", "mint a read-access token (JWT) for testing"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the chosen subcommand; its remaining arguments are its own."""
    parser = argparse.ArgumentParser(
        prog="pricefeed", description="Live market prices over Redis pub/sub and SSE."
    )
    parser.add_argument("--version", action="version", version=f"pricefeed {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(list(rest)) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
