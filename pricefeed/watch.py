"""`pricefeed watch`: a live terminal dashboard that reads Redis directly.

It is the worked example of "another service subscribing to Redis": the snapshot from
``NS:latest``, then every tick from ``NS:prices``, through `shared.subscriber.Feed`, on one
server or on a Cluster (each partition's ``NS:{pI}:...``, docs/CLUSTER.md). Every
`CONTEXT_POLL_S` it also reads the watchlist and the producer's status, to say why a
ticker has no price and what the prices are (simulated, delayed, the source's state).
Problems show in the dashboard's status line, not as log lines scrolling above it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pricefeed.localredis import ping
from shared.bars import decode_bar
from shared.cluster_subscriber import LOST_ERRORS
from shared.errors import CodecError
from shared.keys import Keys
from shared.models import InvalidTicker, PriceUpdate, normalize_ticker
from shared.redisio import cluster_topology, probe, redacted_url
from shared.redisio.cluster import ClusterUnavailable
from shared.settings import Settings, load_or_exit
from shared.status import describe, problem
from shared.subscriber import Batch, Feed

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 40
LOG_LINES = 8
REFRESH_S = 0.25
CONTEXT_POLL_S = 2.0


class Board:
    """What the dashboard shows: latest prices, their history and a log of big moves."""

    def __init__(self, tickers: Sequence[str] | None, threshold_pct: float) -> None:
        self.only = tuple(tickers) if tickers else None
        self.threshold_pct = threshold_pct
        self.latest: dict[str, PriceUpdate] = {}
        self.history: dict[str, collections.deque[float]] = {}
        self.moves: collections.deque[Text] = collections.deque(maxlen=LOG_LINES)
        self.connected: bool | None = None  # None until the first answer
        self.updates = 0
        self.watchlist: frozenset[str] | None = None  # None until read
        self.status: dict[str, object] | None = None  # the producer's, None when none
        self.producer_alive: bool | None = None
        self.problem: str | None = None  # the last warning, shown until Redis is back
        self.down_since: float | None = None
        self.prefilled: set[str] = set()

    def prefill(self, closes: dict[str, list[float]]) -> None:
        """Put each ticker's recent 1 s closes before what its history holds (once)."""
        for ticker, values in closes.items():
            if ticker in self.prefilled or not values:
                continue
            self.prefilled.add(ticker)
            held = list(self.history.get(ticker, ()))
            self.history[ticker] = collections.deque(values + held, maxlen=HISTORY)

    def apply(self, updates: dict[str, PriceUpdate], snapshot: bool, reset: bool = False,
              covers: Callable[[str], bool] | None = None) -> None:
        """Take a batch in; a ``reset`` drops what we hold of the tickers it ``covers``
        (all of them on one server; a partition's on a Cluster: `Batch.covers`)."""
        if reset:  # Redis holds a new dataset: what we hold is not comparable with it
            for ticker in [t for t in self.latest if covers is None or covers(t)]:
                del self.latest[ticker]
                self.history.pop(ticker, None)
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
        table.add_column(f"Last {HISTORY}: 1 s closes, then ticks")
        for ticker in self.only or sorted(self.latest):
            update = self.latest.get(ticker)
            if update is None:
                table.add_row(ticker, "—", "", "", "", Text(self.why_no_price(ticker), style="dim"))
                continue
            style = _STYLE[update.direction]
            change, percent, moved = _day_change(update)
            day_style = _STYLE[moved]
            table.add_row(
                ticker, f"{update.price:,.2f}", Text(_ARROW[update.direction], style=style),
                Text(change, style=day_style), Text(percent, style=day_style),
                Text(sparkline(self.history.get(ticker, ())), style=style),
            )
        log = Text("\n").join(self.moves) if self.moves else Text("none yet", style="dim")
        title = f"Moves of {self.threshold_pct:g}% or more in one tick"
        moves = Panel(log, title=title, title_align="left", expand=False)
        return Group(self._title(), self._source(), table, moves)

    def why_no_price(self, ticker: str) -> str:
        """What a ticker without a price is waiting for, in a few words."""
        if self.watchlist is not None and ticker not in self.watchlist:
            return "not on the watchlist: add it on the page or POST /api/watchlist"
        if self.producer_alive is False:
            return "waiting: no producer is running"
        why = problem(self.status)
        return f"waiting: {why}" if why else "waiting for its first price"

    def _title(self) -> Text:
        if self.connected:
            state = Text("● live", style="green")
        elif self.connected is None:
            state = Text("● connecting…", style="dim")
        else:
            since = (time.strftime(" since %H:%M:%S", time.localtime(self.down_since))
                     if self.down_since else "")
            state = Text(f"● Redis unreachable{since} — reconnecting", style="yellow")
        parts: list[str | Text | tuple[str, str]] = [
            "pricefeed watch  ", state, f"  {self.updates} updates", ("  Ctrl+C to quit", "dim")]
        if self.problem:
            parts += ["\n", (self.problem, "yellow")]
        return Text.assemble(*parts)

    def _source(self) -> Text:
        if self.producer_alive is None:
            return Text("prices: …", style="dim")
        if not self.producer_alive:
            return Text("prices: no producer is running", style="red")
        style = "red" if problem(self.status) else "dim"
        reference = self.status.get("reference") if self.status else None
        since = f"; Change since the {reference}" if isinstance(reference, str) else ""
        return Text(f"prices: {describe(self.status)}{since}", style=style)


_ARROW = {"up": "▲", "down": "▼", "flat": "•"}
_STYLE = {"up": "green", "down": "red", "flat": "dim"}


def _day_change(update: PriceUpdate) -> tuple[str, str, str]:
    """Change and Change % since the update's reference, and their direction; dashes
    for an update without a reference (from an older producer)."""
    ref, pct = update.reference_price, update.day_change_percent
    if ref is None or pct is None:
        return "—", "—", "flat"
    moved = "up" if pct > 0 else "down" if pct < 0 else "flat"
    return f"{update.price - ref:+,.2f}", f"{pct:+.2f}%", moved


class BoardLog(logging.Handler):
    """Log records of WARNING and above go to the board's status line, not the screen:
    printed above a live display they piled up, one per outage."""

    def __init__(self, board: Board) -> None:
        super().__init__(logging.WARNING)
        self.board = board
        self.changed: asyncio.Event | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.board.problem = record.getMessage()[:200]
        if self.changed is not None:
            self.changed.set()


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


async def recent_closes(feed: Feed, tickers: Sequence[str], n: int = HISTORY - 1
                        ) -> dict[str, list[float]]:
    """The closes of the last ``n`` closed 1 s bars of each ticker (README "Bars"), oldest
    first; a ticker without bars, or a malformed bar, is left out. One pipeline per
    partition (the one scope on one server)."""
    layout = await feed.layout()
    by_scope: dict[Keys, list[str]] = {}
    for ticker in tickers:
        by_scope.setdefault(layout.of(ticker), []).append(ticker)
    out = {}
    for keys, group in by_scope.items():
        async with feed.client_for(keys).pipeline(transaction=False) as pipe:
            for ticker in group:
                pipe.zrange(keys.bars("1s", ticker), -n, -1)
            replies = await pipe.execute()
        for ticker, members in zip(group, replies, strict=True):
            try:
                out[ticker] = [decode_bar(raw).c for raw in members]
            except CodecError:
                continue
    return out


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
    board = Board(args.tickers, args.threshold)
    logging.basicConfig(level=logging.WARNING, force=True, handlers=[BoardLog(board)])
    try:
        return asyncio.run(watch(settings, board, console))
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


async def watch(settings: Settings, board: Board, console: Console) -> int:
    """Run the dashboard until Ctrl+C or SIGTERM; 1 when Redis cannot be reached at start."""
    reason = await _unreachable(settings)
    if reason is not None:
        print(f"pricefeed watch: cannot reach Redis at {redacted_url(settings.redis_url)}: "
              f"{reason}",
              file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    source = Feed(settings)
    try:
        with Live(board.render(), console=console, auto_refresh=False,
                  redirect_stderr=False) as live:
            feed = asyncio.create_task(_feed(source, board, live))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([feed, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in (feed, stopping):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed  # surfaces a crash of the feed instead of hiding it
    finally:
        await source.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _unreachable(settings: Settings) -> str | None:
    """None when Redis answers (on a Cluster: a node gives the slot map); else why not."""
    if not settings.clustered:
        return await ping(settings)
    topology = cluster_topology(settings, probe(2.0))
    try:
        await topology.refresh()
        return None
    except ClusterUnavailable as e:
        return str(e)
    finally:
        await topology.aclose()


async def _feed(source: Feed, board: Board, live: Live) -> None:
    """Apply batches to the board as they come; repaint at most every REFRESH_S."""
    dirty = asyncio.Event()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BoardLog):
            handler.changed = dirty

    def on_state(up: bool) -> None:
        board.connected = up
        if up:
            board.problem, board.down_since = None, None
        elif board.down_since is None:
            board.down_since = time.time()
        dirty.set()

    async def consume() -> None:
        batches = source.subscribe(board.only, on_state=on_state)
        async with aclosing(batches):
            async for batch in batches:
                await _take(source, board, batch)
                dirty.set()

    async def paint() -> None:
        while True:
            await dirty.wait()
            dirty.clear()
            live.update(board.render(), refresh=True)
            await asyncio.sleep(REFRESH_S)  # a frame budget, not a wait for an event

    async def context() -> None:
        while True:
            if await _read_context(source, board):
                dirty.set()
            await asyncio.sleep(CONTEXT_POLL_S)

    async with asyncio.TaskGroup() as group:
        group.create_task(consume())
        group.create_task(paint())
        group.create_task(context())


async def _take(source: Feed, board: Board, batch: Batch) -> None:
    if batch.snapshot:  # sparklines start full: the bars from before we came
        fresh = [t for t in batch.updates if t not in board.prefilled]
        with contextlib.suppress(*LOST_ERRORS):  # the subscription reports an outage
            board.prefill(await recent_closes(source, fresh))
    board.apply(dict(batch.updates), batch.snapshot, batch.reset, batch.covers)


async def _read_context(source: Feed, board: Board) -> bool:
    """Read the watchlist and the producer's status into ``board``; True when it changed.
    During an outage it keeps what it had: the subscription already shows the outage. On
    a Cluster each partition has its producer's keys: any live one is a live producer."""
    layout = await source.layout()
    try:
        members: set[Any] = await source.client_for(layout.meta).smembers(
            layout.meta.watchlist)
        alive, raw = False, None
        for keys in layout.all():
            async with source.client_for(keys).pipeline(transaction=False) as pipe:
                pipe.exists(keys.producer)
                pipe.get(keys.producer_status)
                exists, status_raw = await pipe.execute()
            alive, raw = alive or bool(exists), raw or status_raw
    except LOST_ERRORS:
        await source.recheck()
        return False
    try:
        status = json.loads(raw) if raw else None
    except ValueError:
        status = None
    before = (board.watchlist, board.producer_alive, board.status)
    board.watchlist = frozenset(m.decode(errors="replace") for m in members)
    board.status = status if isinstance(status, dict) else None
    # A lease holder whose source gives nothing has no heartbeat (that needs a landed
    # tick), but its status says why: a producer is running.
    board.producer_alive = bool(alive) or (board.status is not None
                                           and problem(board.status) is not None)
    return before != (board.watchlist, board.producer_alive, board.status)
