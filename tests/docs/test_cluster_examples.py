"""README "On a Redis Cluster", as written, against a real Cluster (three primaries, P = 16,
the default namespace) fed by the reference Cluster writer: every `redis-cli` line of its
table (``-p 7000`` pointed at a node that may not serve the slot: ``-c`` must follow), and
the Python program."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys

import pytest

from bench.contract_publisher import ClusterContractWriter
from shared.redisio import SERVICE, cluster_topology
from shared.settings import Settings
from tests.docs.test_readme_examples import PRICE_LINE, README, Lines, program, user_env
from tests.helpers.cluster import RedisClusterGroup
from tests.helpers.support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SECTION = README.split("### On a Redis Cluster", 1)[1].split("\n## ", 1)[0]
STATUS = b'{"source": "reference-writer", "state": "ok"}'
CLI_LINES = re.findall(r"`(redis-cli -c -p 7000 [^`]+)`", SECTION)


@pytest.fixture(scope="module")
def cluster():
    group = RedisClusterGroup(primaries=3, replicas=0).start()
    try:
        yield group
    finally:
        group.close()


@contextlib.asynccontextmanager
async def ticking(group: RedisClusterGroup):
    """The reference writer ticking AAPL and MSFT every 50 ms (P = 16, in the config), and
    its heartbeat and status in every partition."""
    settings = Settings.from_env({"REDIS_URL": group.url})
    topology = cluster_topology(settings, SERVICE)
    writer = ClusterContractWriter(topology, settings.layout, {"AAPL": 190.0, "MSFT": 420.0})
    await writer.aconfig()
    await writer.atick()
    await writer.aheartbeat(STATUS)

    async def run() -> None:
        while True:
            await writer.atick()
            await writer.aheartbeat(STATUS)  # it lives 3 s
            await asyncio.sleep(0.05)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await topology.aclose()


def run_line(line: str, port: int) -> str:
    """The line as pasted, on ``port``; a SSUBSCRIBE is stopped after 2 s."""
    try:
        done = subprocess.run(["bash", "-c", line.replace("-p 7000", f"-p {port}")],
                              capture_output=True, text=True, timeout=2 if "SUBSCRIBE" in line
                              else 10)
    except subprocess.TimeoutExpired as e:
        assert "SUBSCRIBE" in line, line
        return (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else e.stdout or ""
    assert done.returncode == 0 and "ERR" not in done.stdout, (line, done.stdout, done.stderr)
    return done.stdout


async def test_every_redis_cli_line_of_the_cluster_table_works(cluster):
    assert len(CLI_LINES) >= 13
    async with ticking(cluster):
        # A node that does not serve AAPL's partition, so -c has a redirect to follow.
        port = next(n.port for n in cluster.nodes
                    if n.port != cluster.primary_of("pricefeed:{p12}:latest").port)
        for line in CLI_LINES:
            out = await asyncio.to_thread(run_line, line, port)
            if "latest" in line or "ticks" in line:
                assert '"ticker":"AAPL"' in out, (line, out)
            if "SSUBSCRIBE" in line and ":price" in line:  # not the bars' (no bars here)
                assert "smessage" in out and '"AAPL"' in out, (line, out)
            if "producer:status" in line:
                assert '"state": "ok"' in out, (line, out)
            if "config" in line:
                assert out.strip() == "16", (line, out)


async def test_the_cluster_python_program_as_written(cluster, tmp_path):
    script = tmp_path / "follow_cluster.py"
    script.write_text(program("python", "asyncio.run(follow())"))
    async with ticking(cluster):
        follow = Lines([sys.executable, str(script)], user_env({}, cluster.url), ROOT)
        try:
            first = await asyncio.to_thread(
                follow.next_line, lambda ln: PRICE_LINE.match(ln) is not None, 15)
            assert first.split()[0] in ("AAPL", "MSFT")
        finally:
            await asyncio.to_thread(follow.stop)
    assert follow.proc.returncode == 0, follow.err  # Ctrl+C is a clean stop
    assert not [ln for ln in follow.err if ln.strip()], follow.err
