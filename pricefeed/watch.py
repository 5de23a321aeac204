"""`pricefeed watch`: a live terminal dashboard that reads Redis directly.

It is the worked example of "another service subscribing to Redis": the snapshot from
``NS:latest``, then every tick from ``NS:prices``, through `shared.subscriber`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import aclosing

import redis.asyncio as aioredis
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pricefeed.localredis import ping, redact
from shared.models import InvalidTicker, PriceUpdate, normalize_ticker
from shared.settings import Settings, load_or_exit
from shared.subscriber import subscribe

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 40
LOG_LINES = 8
REFRESH_S = 0.25


class Board:
    """What the dashboard shows: latest prices, their history and a log of big moves."""

    def __init__(self, tickers: Sequence[str] | None, threshold_pct: float) -> None:
        self.only = tuple(tickers) if tickers else None
        self.threshold_pct = threshold_pct
        self.latest: dict[str, PriceUpdate] = {}
        self.history: dict[str, collections.deque[float]] = {}
        self.moves: collections.deque[Text] = collections.deque(maxlen=LOG_LINES)
        self.connected = False
        self.updates = 0

    def apply(self, updates: dict[str, PriceUpdate], snapshot: bool, reset: bool = False) -> None:
        if reset:  # Redis holds a new dataset: what we hold is not comparable with it
            self.latest.clear()
            self.history.clear()
            self.moves.append(Text(f"{time.strftime('%H:%M:%S')} resynced: Redis started "
                                   "a new dataset", style="cyan"))
        for ticker, update in updates.items():
            known = self.latest.get(ticker)
            if known is not None and known.seq >= update.seq:
                continue  # a snapshot after a reconnect repeats what we have
            history = self.history.setdefault(ticker, collections.deque(maxlen=HISTORY))
            history.append(update.price)
            self.latest[ticker] = update
            self.updates += 1
            if not snapshot and abs(update.change_percent) >= self.threshold_pct:
                self.moves.append(_move_line(update))

    def render(self) -> Group:
        table = Table(expand=False, header_style="bold")
        table.add_column("Ticker", style="bold")
        table.add_column("Price", justify="right")
        table.add_column("", justify="center")
        table.add_column("Change", justify="right")
        table.add_column("Change %", justify="right")
        table.add_column(f"Last {HISTORY} ticks")
        for ticker in self.only or sorted(self.latest):
            update = self.latest.get(ticker)
            if update is None:
                table.add_row(ticker, "—", "", "", "", Text("waiting", style="dim"))
                continue
            style = _STYLE[update.direction]
            table.add_row(
                ticker, f"{update.price:,.2f}", Text(_ARROW[update.direction], style=style),
                Text(f"{update.change:+,.2f}", style=style),
                Text(f"{update.change_percent:+.3f}%", style=style),
                Text(sparkline(self.history.get(ticker, ())), style=style),
            )
        log = Text("\n").join(self.moves) if self.moves else Text("none yet", style="dim")
        title = f"Moves of {self.threshold_pct:g}% or more in one tick"
        moves = Panel(log, title=title, title_align="left", expand=False)
        return Group(self._title(), table, moves)

    def _title(self) -> Text:
        state = (Text("● live", style="green") if self.connected
                 else Text("● Redis unreachable — reconnecting", style="yellow"))
        return Text.assemble("pricefeed watch  ", state, f"  {self.updates} updates",
                             ("  Ctrl+C to quit", "dim"))


_ARROW = {"up": "▲", "down": "▼", "flat": "•"}
_STYLE = {"up": "green", "down": "red", "flat": "dim"}


def sparkline(values: Sequence[float] | collections.deque[float]) -> str:
    """Unicode block sparkline of ``values`` scaled to their own range."""
    points = list(values)
    if not points:
        return ""
    lo, hi = min(points), max(points)
    if hi == lo:
        return SPARK[3] * len(points)
    scale = (len(SPARK) - 1) / (hi - lo)
    return "".join(SPARK[round((p - lo) * scale)] for p in points)


def _move_line(update: PriceUpdate) -> Text:
    clock = time.strftime("%H:%M:%S", time.localtime(update.timestamp))
    style = _STYLE[update.direction]
    return Text.assemble(
        (clock, "dim"), " ", (update.ticker, "bold"), " ",
        (f"{_ARROW[update.direction]} {update.change_percent:+.2f}%", style),
        f"  {update.previous_price:,.2f} → {update.price:,.2f}",
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pricefeed watch", description="A live terminal dashboard reading Redis directly."
    )
    parser.add_argument("--tickers", type=_ticker_list, default=None,
                        help="comma-separated tickers to show (default: every cached ticker)")
    parser.add_argument("--threshold", type=float, default=1.0, metavar="PCT",
                        help="log moves of at least this many percent in one tick (default 1)")
    args = parser.parse_args(argv)
    settings = load_or_exit()
    console = Console()
    # Log lines (e.g. "lost Redis ...; retrying") print above the live table, not into it.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True,
                        handlers=[RichHandler(console=console, show_path=False)])
    try:
        return asyncio.run(watch(settings, args.tickers, args.threshold, console))
    except KeyboardInterrupt:
        return 0


def _ticker_list(raw: str) -> tuple[str, ...]:
    try:
        tickers = tuple(dict.fromkeys(normalize_ticker(t) for t in raw.split(",") if t.strip()))
    except InvalidTicker as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if not tickers:
        raise argparse.ArgumentTypeError("give at least one ticker")
    return tickers


async def watch(
    settings: Settings, tickers: Sequence[str] | None, threshold_pct: float, console: Console
) -> int:
    """Run the dashboard until Ctrl+C or SIGTERM; 1 when Redis cannot be reached at start."""
    reason = await ping(settings.redis_url)
    if reason is not None:
        print(f"pricefeed watch: cannot reach Redis at {redact(settings.redis_url)}: {reason}",
              file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    board = Board(tickers, threshold_pct)
    client = aioredis.from_url(settings.redis_url, socket_connect_timeout=2,
                               health_check_interval=10)
    try:
        with Live(board.render(), console=console, auto_refresh=False,
                  redirect_stderr=False) as live:
            feed = asyncio.create_task(_feed(client, settings, tickers, board, live))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([feed, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in (feed, stopping):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed  # surfaces a crash of the feed instead of hiding it
    finally:
        await client.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _feed(client: aioredis.Redis, settings: Settings, tickers: Sequence[str] | None,
                board: Board, live: Live) -> None:
    """Apply batches to the board as they come; repaint at most every REFRESH_S."""
    dirty = asyncio.Event()

    def on_state(up: bool) -> None:
        board.connected = up
        dirty.set()

    async def consume() -> None:
        batches = subscribe(client, settings.keys, tickers, on_state=on_state)
        async with aclosing(batches):
            async for batch in batches:
                board.apply(dict(batch.updates), batch.snapshot, batch.reset)
                dirty.set()

    async def paint() -> None:
        while True:
            await dirty.wait()
            dirty.clear()
            live.update(board.render(), refresh=True)
            await asyncio.sleep(REFRESH_S)  # a frame budget, not a wait for an event

    async with asyncio.TaskGroup() as group:
        group.create_task(consume())
        group.create_task(paint())
