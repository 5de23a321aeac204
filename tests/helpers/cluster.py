"""A private Redis Cluster: ``primaries`` primaries and one replica each, every node a
``redis-server --cluster-enabled yes`` on a free port in its own directory, joined by
``redis-cli --cluster create … --cluster-replicas 1`` (docs/CLUSTER.md).

``cluster-node-timeout`` is short (1 s), so a killed primary's replica is promoted within a
few seconds. Optionally every node requires a password (``masterauth`` too, since any node
may become a replica).
"""

from __future__ import annotations

import shutil
import subprocess

import redis
from redis.cluster import RedisCluster

from tests.helpers.poll import wait_for
from tests.helpers.support import RedisServer, free_port

NODE_TIMEOUT_MS = 1000


def _cli() -> str:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("no redis-cli on PATH: apt-get install redis-server (or redis-tools)")
    return cli


class RedisClusterGroup:
    """``nodes[:primaries]`` start as the primaries, the rest as their replicas."""

    def __init__(self, primaries: int = 3, replicas: int = 1, password: str | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.password = password
        self.replicas = replicas
        fast = ("--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--repl-diskless-sync-delay", "0", *args)
        self.nodes = [RedisServer(password=password, args=fast)
                      for _ in range(primaries * (1 + replicas))]
        for node in self.nodes:  # its own nodes.conf, and a free bus port (by default the
            # port + 10,000, which a free port above 55,535 cannot have)
            node.args = (*node.args, "--cluster-config-file", f"{node.dir}/nodes.conf",
                         "--cluster-port", str(free_port()))

    @property
    def url(self) -> str:
        """``REDIS_URL`` of this Cluster: every node a seed."""
        auth = f":{self.password}@" if self.password else ""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{auth}{seeds}"

    def start(self) -> RedisClusterGroup:
        """Start and join the nodes; on failure close what was started, then raise."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> RedisClusterGroup:
        for node in self.nodes:
            node.start()
        cmd = [_cli(), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
               "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        if self.password:
            cmd += ["-a", self.password, "--no-auth-warning"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        wait_for(self._settled, 30, 0.1, "a Cluster with every slot served and replicas synced")
        return self

    def client(self) -> RedisCluster:
        """A synchronous Cluster client (for the test's own reads and writes)."""
        node = self.nodes[0]
        return RedisCluster(host="127.0.0.1", port=node.port, password=self.password,
                            socket_timeout=5)

    def node_client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, socket_timeout=5)

    def primary_of(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now."""
        cluster = self.client()
        try:
            port = cluster.get_node_from_key(key).port
        finally:
            cluster.close()
        return next(n for n in self.nodes if n.port == port)

    def node_id(self, port: int) -> str:
        return str(self.node_client(port).execute_command("CLUSTER MYID").decode())

    def assign_slot(self, slot: int, port: int) -> None:
        """Give an EMPTY ``slot`` to the primary on ``port`` (``CLUSTER SETSLOT … NODE`` on
        every primary; a slot holding keys needs a migration instead)."""
        node = self.node_id(port)
        # A node takes a slot from the claim of a higher config epoch than its owner's,
        # which `--cluster create` numbered in node order. So the new owner gets the
        # greatest epoch BEFORE any node is told: bumped after, the old owner's gossip
        # while it still claims the slot (it may be told after the new owner) handed the
        # slot back to it on nodes already told, the new owner included, and two primaries
        # then sent each other's MOVED for ever (seen once, with two suites running). The
        # replicas, which refuse SETSLOT, learn it from the new owner's gossip only thanks
        # to that epoch as well.
        self.node_client(port).execute_command("CLUSTER", "BUMPEPOCH")
        for other in self.alive():
            client = self.node_client(other.port)
            if client.info("replication")["role"] == "master":
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node)
        # Replicas refuse SETSLOT ("only with masters"): they learn it by gossip, which
        # took over 10 s once with the whole suite running beside it on 2 cores.
        wait_for(lambda: all(self._owner(n.port, slot) == node for n in self.alive()),
                 30, 0.05, f"every node sees slot {slot} on port {port}")

    def migrate_slot(self, slot: int, port: int, batch: int = 100) -> int:
        """Move ``slot`` and its keys to the primary on ``port`` while clients run, the way
        ``redis-cli --cluster reshard`` does: IMPORTING on the target, MIGRATING on the
        source, ``MIGRATE`` the keys in batches, then ``SETSLOT … NODE`` everywhere.
        Returns the number of keys moved."""
        source_port = self._owner_port(slot)
        source, target = self.node_client(source_port), self.node_client(port)
        source_id, target_id = self.node_id(source_port), self.node_id(port)
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        auth = ("AUTH", self.password) if self.password else ()
        while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            source.execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, *auth,
                                   "KEYS", *keys)
            moved += len(keys)
        for client in (target, source):  # the target first, as redis-cli does
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for other in self.alive():
            if other.port not in (port, source_port) and self.is_primary(other.port):
                self.node_client(other.port).execute_command(
                    "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def _owner_port(self, slot: int) -> int:
        for start, end, primary, *_ in self.node_client(self.nodes[0].port).execute_command(
                "CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise LookupError(f"no primary serves slot {slot}")

    def is_primary(self, port: int) -> bool:
        try:
            return self.node_client(port).info("replication")["role"] == "master"
        except redis.RedisError:
            return False

    def _owner(self, port: int, slot: int) -> str | None:
        for start, end, primary, *_ in self.node_client(port).execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return str(primary[2].decode())
        return None

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def _settled(self) -> bool:
        try:
            for node in self.alive():
                info = self.node_client(node.port).cluster("info")
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16384:
                    return False
                repl = self.node_client(node.port).info("replication")
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
        except (redis.RedisError, KeyError, ValueError):
            return False
        return True

    def wait_settled(self, timeout_s: float = 30) -> None:
        """Until every live node sees every slot served (after a failover)."""
        wait_for(self._settled, timeout_s, 0.1, "the Cluster settled")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
