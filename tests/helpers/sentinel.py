"""A private Redis Sentinel deployment: a primary, one replica and three sentinels, each on
a free port in a temporary directory, all with one password (docs/REDIS.md, "Sentinel").

Failures are detected fast (``down-after-milliseconds`` 500, ``failover-timeout`` 2000), so
a test can fail over in a couple of seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from pricefeed.localredis import find_server
from tests.helpers.poll import wait_for
from tests.helpers.support import RedisServer, free_port

MASTER = "pricefeed"
PASSWORD = "sentinel-test-pw"
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 2000


class SentinelGroup:
    """Two servers (``servers[0]`` starts as the primary) and three sentinels watching them."""

    def __init__(self, password: str = PASSWORD) -> None:
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="pricefeed-sentinel-"))
        # No wait before a replica's first sync (Redis waits 5 s by default for more
        # replicas to share it); either server may be the primary that syncs the other.
        fast = ("--repl-diskless-sync-delay", "0")
        primary = RedisServer(password=password, args=fast)
        replica = RedisServer(password=password,
                              args=(*fast, "--replicaof", "127.0.0.1", str(primary.port)))
        self.servers = [primary, replica]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """``REDIS_URL`` of this deployment."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://:{self.password}@{hosts}/{MASTER}/0"

    def start(self) -> SentinelGroup:
        for server in self.servers:
            server.start()
        binary = find_server()
        assert binary is not None
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\nrequirepass {self.password}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.servers[0].port} 2\n"
                f"sentinel auth-pass {MASTER} {self.password}\n"
                f"sentinel sentinel-pass {self.password}\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n")
            self.sentinels.append(subprocess.Popen(
                [binary.path, str(conf), "--sentinel", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(self._settled, 20, 0.05, "sentinels that know the replica and each other")
        return self

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], password=self.password,
                           socket_timeout=2)

    def primary_port(self) -> int | None:
        """The port every sentinel names as the primary's; None while they disagree."""
        seen = set()
        for i in range(len(self.sentinel_ports)):
            try:
                seen.add(int(self.sentinel(i).sentinel_get_master_addr_by_name(MASTER)[1]))
            except (redis.RedisError, TypeError):
                return None
        return seen.pop() if len(seen) == 1 else None

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def _settled(self) -> bool:
        try:
            link = self.servers[1].client().info("replication").get("master_link_status")
            states = [self.sentinel(i).sentinel_master(MASTER)
                      for i in range(len(self.sentinel_ports))]
        except redis.RedisError:
            return False
        return link == "up" and all(
            s["num-slaves"] >= 1 and s["num-other-sentinels"] >= 2 for s in states)

    def close(self) -> None:
        for proc in self.sentinels:
            proc.terminate()
        for proc in self.sentinels:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in self.servers:
            server.close()
        shutil.rmtree(self.dir, ignore_errors=True)
