"""Fixtures every suite can use. A private redis-server per test session; never the
machine's own Redis (unless REDIS_URL names one), and never FLUSHALL: each test gets
its own namespace instead."""

from __future__ import annotations

import itertools
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from shared.settings import Settings
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.sentinel import SentinelGroup
from tests.helpers.support import RedisServer
from tests.helpers.topologies import ClusterWorld, ServerWorld, one_partition_per_primary

_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    """Give the run Ctrl+C back when the shell that started it took it away.

    A script that starts the suite in the background (``cmd &`` with no job control, as a
    CI wrapper does) starts it with SIGINT ignored, and every child inherits that: the
    README's Python example, which stops on Python's own KeyboardInterrupt, then ignored
    the test's Ctrl+C and was SIGKILLed (seen in such a run). A terminal
    gives a foreground job SIGINT at its default, which is what the tests stand for. An
    ignored signal stays ignored across exec, a Python handler does not, so restoring
    Python's default here gives every child process the default too."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis shared by the session: REDIS_URL when given, else a private server."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Private redis-servers this test may stop, start and reconfigure (``*args`` are
    extra redis-server options); all closed at its end."""
    servers: list[RedisServer] = []

    def make(*args: str) -> RedisServer:
        server = RedisServer(args=args).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    """A private primary, replica and three sentinels (tests/helpers/sentinel.py), all
    closed at the test's end."""
    group = SentinelGroup().start()
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterGroup]:
    """A private Cluster of three primaries with a replica each (tests/helpers/cluster.py)
    for one test module; a module that needs another shape defines its own."""
    group = RedisClusterGroup().start()
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="session")
def contract_cluster() -> Iterator[RedisClusterGroup]:
    """A Cluster of three primaries (a replica each) shared by the session's contract
    tests, with partition i of P = 3 on the i-th primary (tests/helpers/topologies.py)."""
    group = RedisClusterGroup(primaries=3, replicas=1).start()
    try:
        yield one_partition_per_primary(group)
    finally:
        group.close()


@pytest.fixture(params=["server", "cluster"])
async def world(request: pytest.FixtureRequest, redis_url: str, namespace: str
                ) -> AsyncIterator[ServerWorld]:
    """The topology a contract test runs on: one redis-server, then the P = 3 Cluster;
    the same assertions hold on both (tests/helpers/topologies.py)."""
    if request.param == "server":
        chosen = ServerWorld(redis_url, namespace)
    else:
        chosen = await ClusterWorld(request.getfixturevalue("contract_cluster"),
                                    namespace).start()
    try:
        yield chosen
    finally:
        await chosen.aclose()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so tests share a Redis without flushing it."""
    return f"t{next(_counter)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(redis_url: str, namespace: str) -> Settings:
    """Default settings pointed at the session's Redis under a fresh namespace."""
    return Settings(redis_url=redis_url, namespace=namespace)


@pytest.fixture
def service_env(redis_url: str, namespace: str) -> dict[str, str]:
    """Environment for a pricefeed process talking to the session's Redis."""
    return {"REDIS_URL": redis_url, "PRICEFEED_NAMESPACE": namespace}


@pytest.fixture
async def aredis(redis_url: str) -> aioredis.Redis:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def sredis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    """One in-memory Redis (with Lua) per test, for unit tests where a real one adds
    nothing; every client made on it (`fake_redis`, an app's) sees the same data."""
    return fakeredis.FakeServer()


@pytest.fixture
async def fake_redis(fake_server: fakeredis.FakeServer) -> aioredis.Redis:
    """An async client of `fake_server`."""
    client = fakeredis.FakeAsyncRedis(server=fake_server)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium executable for playwright (tests/chromium.py says which, and why)."""
    from tests.helpers.chromium import find_chromium

    return find_chromium()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests write screenshots and logs worth keeping (tests/artifacts/)."""
    path = Path(__file__).parent / "artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def reliability_figures() -> Iterator[None]:
    """Writes the figures the fault and load scenarios measured to the file
    ``PRICEFEED_TEST_FIGURES`` names, when bench/reliability.py asks; a test run alone
    writes none (docs/ take their figures from bench/)."""
    yield
    target = os.environ.get("PRICEFEED_TEST_FIGURES")
    if not target:
        return
    from tests.gateway import test_load
    from tests.producer import test_redis_faults
    from tests.system import test_faults

    found = {**test_faults.FIGURES, **test_load.FIGURES, **test_redis_faults.FIGURES}
    Path(target).write_text(json.dumps(found, indent=1))
