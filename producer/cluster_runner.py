"""The producer on a Redis Cluster: one price source split by partition, each partition
this process holds written by its own `PartitionTerm` (docs/CLUSTER.md).

It keeps the slot map (`ClusterTopology`), checks P in ``NS:{meta}:config``, follows the
watchlist through the meta slot, and every `BALANCE_INTERVAL_S` registers and balances
(`producer.partitions`). A term that ends (lease lost, a Redis error, ``MOVED``) ends
alone: the slot map is asked again and the partition is free to take at the next round.
A failing meta slot keeps the last share and retries the watchlist with backoff; the
terms go on. Logs: one line per change of state, never per tick or retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn

from redis.exceptions import RedisError

from producer.backfills import PartitionBackfills, backfill_for
from producer.lease import Lease, new_owner_id
from producer.partition_term import PartitionTerm, end_reason
from producer.partitions import (
    BALANCE_INTERVAL_S,
    Splitter,
    beyond_share,
    check_partitions,
    free_partitions,
    register,
    share_of,
    unregister,
)
from producer.publisher import FAILURES, Publisher
from producer.runner import SourceConfigError, bar_options
from producer.scripts import check_scripting
from producer.sources.base import MarketDataSource, Quote
from producer.sources.factory import create_source
from producer.watchlist import Watchlist
from shared.backoff import Backoff
from shared.bars import Bar
from shared.keys import partition_of
from shared.models import OUT_OF_MEMORY_STATE
from shared.redisio.cluster import ClusterTopology
from shared.settings import Settings
from shared.tasks import race

log = logging.getLogger(__name__)

LEAVE_TIMEOUT_S = 0.5


class ClusterRunner:
    """One producer process on a Cluster: the registry, the balance, the terms."""

    def __init__(self, settings: Settings, topology: ClusterTopology,
                 owner_id: str | None = None) -> None:
        self.settings = settings
        self.layout = settings.layout
        self.meta = self.layout.meta
        self.topology = topology
        self.owner_id = owner_id or new_owner_id()
        self.terms: dict[int, PartitionTerm] = {}
        self.source: MarketDataSource | None = None
        self.watchlist: Watchlist | None = None
        self.share = 0
        self._publishers: dict[int, Publisher] = {}  # each partition's last, for its seqs
        self._splitter = Splitter(settings.partitions)
        self._bars = bar_options(settings)
        self._backfills = PartitionBackfills()  # Massive's 1 min bars, per partition taken
        self._redis_ok: bool | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Produce until ``stop`` is set; then give every lease up and leave the registry."""
        try:
            if await self._retrying(self._connect, stop):
                backfill = backfill_for(self.settings, self.source, self._write_backfill)
                await race(self._balance(), self._follow(stop), stop.wait(),
                           self._backfills.run(backfill))
        finally:
            await self._stop()

    async def _retrying(self, attempt: Callable[[], Awaitable[None]],
                        stop: asyncio.Event) -> bool:
        """Run ``attempt`` until it succeeds (True) or ``stop`` is set (False), retrying a
        failed meta slot with backoff (one log line per change of state)."""
        backoff = Backoff(initial_s=0.1, cap_s=2.0)
        while not stop.is_set():
            try:
                await attempt()
                self._redis_state(True)
                return True
            except (RedisError, OSError) as e:
                self._redis_state(False, e)
                with contextlib.suppress(RedisError, OSError):
                    await self.topology.refresh(force=True)
                await _wait(stop, backoff.next_delay())
        return False

    async def _connect(self) -> None:
        """The slot map, the config check, and the watchlist (the source starts once)."""
        await self.topology.refresh()
        meta = self.topology.client_for(self.meta)
        await check_scripting(meta)
        await check_partitions(meta, self.meta, self.settings.partitions)
        self.watchlist = Watchlist(meta, self.meta, self.settings.tickers,
                                   self.settings.max_watchlist, self._add_ticker,
                                   self._remove_ticker)
        tickers = await self.watchlist.load()
        try:
            self.source = create_source(self.settings, self._publish)
        except ValueError as e:  # a source that cannot work with these settings
            raise SourceConfigError(str(e)) from e
        await self.source.start(tickers, {})

    async def _follow(self, stop: asyncio.Event) -> None:
        """Follow the watchlist; a failed meta slot is retried, the terms going on."""
        watchlist = self.watchlist
        assert watchlist is not None

        async def attempt() -> None:
            watchlist.redis = self.topology.client_for(self.meta)
            produced = dict(watchlist.current)
            await watchlist.load(fallback=list(produced))  # a meta slot that lost its data
            watchlist.current = produced  # `follow` resyncs: the changes go through callbacks
            await watchlist.follow()

        while await self._retrying(attempt, stop):
            pass

    async def _balance(self) -> NoReturn:
        while True:
            await self._round()
            await asyncio.sleep(BALANCE_INTERVAL_S)

    async def _round(self) -> None:
        """Register, then give up or take partitions to match the share. With the meta
        slot unavailable the last share holds: the partitions go on (and are retaken)."""
        await self._reap()
        share = self.share
        try:
            live = await register(self.topology.client_for(self.meta), self.meta,
                                  self.owner_id)
            share = share_of(self.settings.partitions, live)
            self._redis_state(True)
        except (RedisError, OSError) as e:
            self._redis_state(False, e)
            live = 0
        if share != self.share:
            log.info("%d producers live: this one's share is %d of %d partitions", live,
                     share, self.settings.partitions)
            self.share = share
        extra = beyond_share(list(self.terms), share)
        if extra:
            await asyncio.gather(*(self.terms.pop(i).give_up() for i in extra))
            log.info("gave up partitions %s; holding %s", extra, sorted(self.terms))
        if len(self.terms) < share:
            taken = await self._take(share - len(self.terms))
            if taken:
                log.info("took partitions %s; holding %s", taken, sorted(self.terms))

    async def _reap(self) -> None:
        """Forget the terms that ended; one line naming them and why."""
        ended = {i: t for i, t in self.terms.items() if t.task is not None and t.task.done()}
        if not ended:
            return
        reasons: dict[str, tuple[list[int], str]] = {}  # one line per kind of error
        for index, term in ended.items():
            del self.terms[index]
            assert term.task is not None
            error = None if term.task.cancelled() else term.task.exception()
            if error is not None and not isinstance(error, FAILURES):
                raise error  # a bug: it must not vanish
            kind = type(error).__name__
            reasons.setdefault(kind, ([], end_reason(error)))[0].append(index)
        for indexes, reason in reasons.values():
            log.warning("stopped writing partitions %s (%s); they are free to take again",
                        sorted(indexes), reason)
        with contextlib.suppress(RedisError, OSError):
            await self.topology.refresh(force=True)

    async def _take(self, wanted: int) -> list[int]:
        """Take up to ``wanted`` free partitions, lowest first."""
        taken: list[int] = []
        others = [i for i in range(self.settings.partitions) if i not in self.terms]
        try:  # below the share may be a failover: a slot map a second old at most
            await self.topology.refresh()
            free = await free_partitions(self.topology, self.layout, others, self.owner_id)
        except (RedisError, OSError):
            return taken
        for index in free:
            if len(taken) == wanted:
                break
            if await self._take_one(index):
                taken.append(index)
        return taken

    async def _take_one(self, index: int) -> bool:
        """Take partition ``index`` if its lease is free (or already ours) and start its
        term; a node that fails is skipped this round (the slot map is asked again)."""
        keys = self.layout.partition(index)
        try:
            redis = self.topology.client_for(keys)
            if not await Lease(redis, keys, self.owner_id).acquire():
                return False
            term = PartitionTerm(index, keys, redis, self.owner_id, self.settings,
                                 self._bars, self.status)
            tickers = self._tickers_of(index)
            prices = await term.begin(tickers, self._publishers.get(index))
        except FAILURES as e:
            log.debug("could not take partition %d (%s)", index, type(e).__name__)
            with contextlib.suppress(RedisError, OSError):
                await self.topology.refresh()
            return False
        self._publishers[index] = term.publisher
        if self.source is not None:
            await self.source.continue_from(prices)
        term.start()
        self.terms[index] = term
        self._backfills.add(tickers)
        now = self._tickers_of(index)  # the watchlist may have changed during `begin`
        for ticker in [t for t in now if t not in tickers]:
            await term.add_ticker(ticker)
        for ticker in [t for t in tickers if t not in now]:
            await term.remove_ticker(ticker)
        return True

    def _tickers_of(self, index: int) -> list[str]:
        current = self.watchlist.current if self.watchlist is not None else {}
        return [t for t in current if partition_of(t, self.settings.partitions) == index]

    async def _publish(self, quotes: Mapping[str, Quote]) -> None:
        """The source's sink: each held partition's quotes to its publisher, concurrently
        (each `Publisher.publish` returns once its tick is sent)."""
        terms = self.terms
        sends = [terms[i].publisher.publish(batch)
                 for i, batch in self._splitter.split(quotes).items()
                 if i in terms and terms[i].live]
        if sends:
            await asyncio.gather(*sends)

    async def _add_ticker(self, ticker: str) -> None:
        term = self._term_of(ticker)
        if term is not None:
            await term.add_ticker(ticker)
        if self.source is not None:
            cached = term.publisher.last_prices().get(ticker) if term is not None else None
            await self.source.add_ticker(ticker, cached)

    async def _remove_ticker(self, ticker: str) -> None:
        if self.source is not None:
            await self.source.remove_ticker(ticker)
        term = self._term_of(ticker)
        if term is not None:
            await term.remove_ticker(ticker)

    async def _write_backfill(self, ticker: str, bars: Sequence[Bar]) -> int:
        term = self._term_of(ticker)
        return 0 if term is None else await term.write_backfill(ticker, bars)

    def _term_of(self, ticker: str) -> PartitionTerm | None:
        term = self.terms.get(partition_of(ticker, self.settings.partitions))
        return term if term is not None and term.live else None

    def status(self) -> dict[str, Any]:
        """What each partition's ``producer:status`` shows besides the id and the time."""
        source = self.source
        state = source.state if source else "starting"
        memory = any(t.publisher.out_of_memory for t in self.terms.values())
        return {
            "source": source.kind if source else None,
            "state": OUT_OF_MEMORY_STATE if memory else state,
            "tick_interval_s": self.settings.tick_interval_s,
            **(source.details() if source else {}),
        }

    async def _stop(self) -> None:
        """Stop the source, give every partition up (leases deleted) and leave."""
        if self.source is not None:
            await self.source.stop()
        held = sorted(self.terms)
        terms, self.terms = list(self.terms.values()), {}
        await asyncio.gather(*(t.give_up() for t in terms))
        if held:
            log.info("released partitions %s", held)
        with contextlib.suppress(RedisError, OSError, TimeoutError, LookupError):
            async with asyncio.timeout(LEAVE_TIMEOUT_S):
                await unregister(self.topology.client_for(self.meta), self.meta, self.owner_id)

    def _redis_state(self, ok: bool, error: BaseException | None = None) -> None:
        if ok and self._redis_ok is False:
            log.info("the Cluster's meta slot answers again")
        elif not ok and self._redis_ok is not False:
            log.warning("the Cluster's meta slot is unavailable (%s); retrying with backoff "
                        "(held partitions go on)", error)
        self._redis_ok = ok


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

