"""Helpers of the reliability suite: a whole system of real processes, metrics, memory.

Reuses tests/support.py (RedisServer, Service, wait_for, free_port) and the SSE reader of
the gateway suite; adds only what several scenarios share.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import psutil
import redis

from shared.keys import Keys, partition_of
from shared.models import is_valid_ticker
from tests.helpers.poll import wait_for
from tests.helpers.support import ROOT, Service, free_port

LOGS = ROOT / "tests" / "artifacts" / "reliability"
TICKERS = ("AAPL", "MSFT", "TSLA", "NVDA", "JPM")


@dataclass
class System:
    """A producer (or several) and gateways on one Redis, under one namespace."""

    redis_url: str
    keys: Keys
    env: dict[str, str]
    logs: Path
    producers: list[Service] = field(default_factory=list)
    gateways: list[Service] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def start_producer(self, **env: str) -> Service:
        name = f"{self.keys.namespace}-producer{len(self.producers)}.log"
        service = Service(["producer"], {**self.env, **env}, self.logs / name)
        self.producers.append(service)
        return service

    def start_gateway(self, port: int | None = None, **env: str) -> Service:
        port = port or free_port()
        name = f"{self.keys.namespace}-gateway{len(self.gateways)}.log"
        service = Service(["gateway"], {**self.env, "PRICEFEED_PORT": str(port), **env},
                          self.logs / name)
        self.gateways.append(service)
        self.ports.append(port)
        return service

    def stop(self) -> None:
        for service in [*self.gateways, *self.producers]:
            if service.proc.returncode is None:
                service.stop()


@contextlib.contextmanager
def system(redis_url: str, producers: int = 1, gateways: int = 1, **env: str) -> Iterator[System]:
    """Real ``pricefeed`` processes; every gateway ready before the block runs."""
    LOGS.mkdir(parents=True, exist_ok=True)
    namespace = f"rel-{uuid.uuid4().hex[:8]}"
    base = {"REDIS_URL": redis_url, "PRICEFEED_NAMESPACE": namespace,
            "PRICEFEED_TICK_INTERVAL": "0.1", "PRICEFEED_TICKERS": ",".join(TICKERS), **env}
    sys = System(redis_url, Keys(namespace), base, LOGS)
    try:
        for _ in range(producers):
            sys.start_producer()
        for _ in range(gateways):
            sys.start_gateway()
        for url in sys.urls:
            wait_for(lambda u=url: serving(u), 30, 0.05, f"{url} ready")
        yield sys
    finally:
        sys.stop()


def serving(url: str) -> bool:
    """Ready, or only the price source (e.g. a rejected Massive key) keeps it from being so."""
    try:
        answer = httpx.get(url + "/api/ready", timeout=2)
    except httpx.TransportError:
        return False
    if answer.status_code == 200:
        return True
    return answer.status_code == 503 and answer.json().get("reason", "").startswith(
        "price source not producing")


def status(url: str, path: str) -> int:
    """The HTTP status of GET ``url+path``; 0 when nothing answers."""
    try:
        return httpx.get(url + path, timeout=2).status_code
    except httpx.TransportError:
        return 0


def metrics(url: str) -> dict[str, float]:
    """The gateway's /metrics as {name: value} (unlabelled samples only)."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()[:2]
            out[name] = float(value)
    return out


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def check_update(ticker: str, update: Mapping[str, object]) -> None:
    """A PriceUpdate a client may be shown: valid symbol, finite positive prices, int seq."""
    assert is_valid_ticker(ticker) and update["ticker"] == ticker, update
    for name in ("price", "previous_price"):
        value = update[name]
        assert isinstance(value, float | int) and not isinstance(value, bool), update
        assert math.isfinite(value) and value > 0, update
    assert isinstance(update["seq"], int) and update["seq"] > 0, update
    assert update["direction"] in ("up", "down", "flat"), update


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Whole SSE frames (CRLF, the gateway's line ending) and the incomplete rest."""
    *whole, rest = buffer.split(b"\r\n\r\n")
    return whole, rest


def _position(raw: bytes) -> bool:
    return all(part.isdigit() for part in raw.split(b"."))


def check_frame(frame: bytes) -> dict[str, dict[str, object]] | None:
    """One raw SSE frame (no blank-line terminator) well formed; its data, if any."""
    data = None
    event_id = None
    for line in frame.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line and b"\x00" not in line, frame[:200]
        name, sep, value = line.partition(b":")
        assert sep, f"a line without a field name: {line[:100]!r}"
        value = value.removeprefix(b" ")
        if name == b"":
            continue  # a comment (ping)
        assert name in (b"id", b"data", b"retry", b"event"), line[:100]
        if name == b"event":
            assert value == b"reset", value
        elif name == b"id":
            # One server: one position; a Cluster: one per partition, joined by dots
            # (docs/CLUSTER.md, "The gateway on a Cluster").
            epoch, pos, prev = value.split(b"-")
            assert len(epoch) == 16 and _position(pos) and _position(prev), value
            event_id = [int(part) for part in pos.split(b".")]
        elif name == b"retry":
            assert value.isdigit(), value
        else:
            assert data is None, "one data line per event"
            data = orjson.loads(value)
    if data is None or event_id is None:
        return None  # a ping, the retry line, or a reset
    assert isinstance(data, dict), frame[:200]
    for ticker, update in data.items():
        check_update(ticker, update)
    # The position is the tick's: on a Cluster, the component of each ticker's partition.
    assert all(u["seq"] <= event_id[partition_of(t, len(event_id)) if len(event_id) > 1 else 0]
               for t, u in data.items())
    return data
