"""Tick-write designs side by side: what one tick of 10,000 tickers costs Redis and us.

Every design writes one tick as one fenced, atomic unit against a private redis-server:
every update into the ``latest`` hash, each on its ``price:{TICKER}`` channel, and the
tick map on ``prices`` — with two subscribers draining the channels, as the producer
bench does. Only the way the tick reaches Redis differs:

- ``evalsha``: the producer's tick script without the tick log and bars (the same work
  as the other designs), one EVALSHA with a ticker/payload pair per update (~20,000
  ARGV strings), packed by hiredis as the producer packs it;
- ``function``: the same Lua as a Redis 7 function (FUNCTION LOAD once, then FCALL);
- ``packed-function``: a function that gets all pairs in ONE argument
  (``TICKER NUL PAYLOAD NUL ...``) and splits it with ``string.find``;
- ``msgpack-function``: the pairs as one msgpack array, decoded by Redis's cmsgpack;
- ``multi``: no script: WATCH the lease, GET it (ours?), then MULTI, HSET in chunks of
  2,000 pairs, one PUBLISH per ticker, the map, EXEC. WATCH makes EXEC fail if the lease
  changed after the GET — fenced, provided the producer does not renew its own lease
  between the WATCH and the EXEC (a renewal would abort the tick).

Each design first proves it is fenced (a tick under someone else's lease writes nothing),
then runs ``--ticks`` ticks back to back. Per tick: Redis CPU (the redis-server process,
psutil), Redis time in the top-level command (INFO commandstats), our time packing the
request, and wall time. Nothing in producer/ is changed or started.

    uv run python -m bench.tick_write_bench        # 10,000 tickers, 30 ticks, 2 rounds
    uv run python -m bench.tick_write_bench --tickers 1000 --ticks 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hiredis
import orjson
import psutil

from bench.procs import ROOT, free_port

OWNER = "bench-owner"
NS = "tw"
LEASE, LATEST, PRICES, PREFIX = f"{NS}:producer", f"{NS}:latest", f"{NS}:prices", f"{NS}:price:"
HSET_PAIRS = 2000  # per HSET: the producer's chunk (Lua's unpack() stack limit)

# One Lua body per function; `keys`/`args` as FCALL passes them. The lease check first.
LIBRARY = """#!lua name=twbench
local function check(keys, args)
  return redis.call('GET', keys[1]) == args[1]
end
local function pairs_tick(keys, args)
  if not check(keys, args) then return 0 end
  local n = #args
  for i = 5, n, 4000 do
    redis.call('HSET', keys[2], unpack(args, i, math.min(i + 3999, n)))
  end
  local prefix = args[2]
  for i = 5, n, 2 do
    redis.call('PUBLISH', prefix .. args[i], args[i + 1])
  end
  redis.call('PUBLISH', args[3], args[4])
  return 1
end
local function flush(key, buf, k)
  if k > 0 then redis.call('HSET', key, unpack(buf, 1, k)) end
end
local function packed_tick(keys, args)
  if not check(keys, args) then return 0 end
  local s, pos, prefix, buf, k = args[5], 1, args[2], {}, 0
  local len = #s
  while pos <= len do
    local a = string.find(s, '\\0', pos, true)
    local b = string.find(s, '\\0', a + 1, true)
    local t, p = string.sub(s, pos, a - 1), string.sub(s, a + 1, b - 1)
    pos = b + 1
    buf[k + 1], buf[k + 2], k = t, p, k + 2
    redis.call('PUBLISH', prefix .. t, p)
    if k == 4000 then flush(keys[2], buf, k); k = 0 end
  end
  flush(keys[2], buf, k)
  redis.call('PUBLISH', args[3], args[4])
  return 1
end
local function msgpack_tick(keys, args)
  if not check(keys, args) then return 0 end
  local t, prefix = cmsgpack.unpack(args[5]), args[2]
  local n = #t
  for i = 1, n, 4000 do
    redis.call('HSET', keys[2], unpack(t, i, math.min(i + 3999, n)))
  end
  for i = 1, n, 2 do
    redis.call('PUBLISH', prefix .. t[i], t[i + 1])
  end
  redis.call('PUBLISH', args[3], args[4])
  return 1
end
redis.register_function('tw_pairs', pairs_tick)
redis.register_function('tw_packed', packed_tick)
redis.register_function('tw_msgpack', msgpack_tick)
"""


# The producer's tick script as it was before the tick log and bars joined it (commit
# bc93579, producer/scripts.py PUBLISH_TICK): the same work as every design here.
EVALSHA_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = #ARGV
for i = 6, n, 4000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 3999, n)))
end
local last = 5 + 2 * tonumber(ARGV[5])
if last < 6 then return 1 end
local prefix = ARGV[2]
for i = 6, last, 2 do
  redis.call('PUBLISH', prefix .. ARGV[i], ARGV[i + 1])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


@dataclass
class Tick:
    tickers: list[str]
    payloads: list[bytes]
    tick_map: bytes


def make_tick(n: int, seq0: int) -> Tick:
    """``n`` updates shaped like the producer's (same fields, similar sizes)."""
    tickers = [f"X{i:04d}" for i in range(n)]
    now = time.time()
    payloads = [
        orjson.dumps(
            {
                "ticker": t,
                "price": 100.0 + i % 97 + seq0 % 7 / 100,
                "previous_price": 100.0 + i % 97,
                "timestamp": now,
                "change": 0.01,
                "change_percent": 0.0099,
                "direction": "up",
                "seq": seq0 + i,
            }
        )
        for i, t in enumerate(tickers)
    ]
    pairs = zip(tickers, payloads, strict=True)
    tick_map = b"{" + b",".join(b'"%s":%s' % (t.encode(), p) for t, p in pairs) + b"}"
    return Tick(tickers, payloads, tick_map)


def interleave(tick: Tick) -> list[bytes | str]:
    return [x for pair in zip(tick.tickers, tick.payloads, strict=True) for x in pair]


def msgpack_array(items: Sequence[bytes | str]) -> bytes:
    """A msgpack array of strings (str8/16/32), as cmsgpack decodes it into a Lua table."""
    out = [struct.pack(">BI", 0xDD, len(items))]
    for item in items:
        b = item.encode() if isinstance(item, str) else item
        n = len(b)
        head = (
            struct.pack(">BB", 0xD9, n)
            if n < 256
            else (struct.pack(">BH", 0xDA, n) if n < 65536 else struct.pack(">BI", 0xDB, n))
        )
        out += (head, b)
    return b"".join(out)


class Conn:
    """A raw RESP connection: hiredis packs requests and parses replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = hiredis.Reader()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, n: int) -> list[object]:
        out: list[object] = []
        while len(out) < n:
            reply = self.reader.gets()
            if reply is False:
                self.reader.feed(self.sock.recv(1 << 20))
                continue
            out.append(reply)
        return out

    def call(self, *args: object) -> object:
        self.send(hiredis.pack_command(args))
        return self.replies(1)[0]


def drain(port: int, command: bytes) -> threading.Thread:
    """A subscriber that reads and discards everything (a daemon thread)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(command)

    def run() -> None:
        with sock:
            while sock.recv(1 << 20):
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# A design: pack(tick) -> (request bytes, replies to read); then check(replies) -> written?
Design = Callable[[Conn, Tick], bool]


def run_evalsha(sha: str) -> Design:
    def tick_fn(conn: Conn, tick: Tick) -> bool:
        args = [OWNER, PREFIX, PRICES, tick.tick_map, len(tick.tickers), *interleave(tick)]
        conn.send(hiredis.pack_command(("EVALSHA", sha, 2, LEASE, LATEST, *args)))
        return conn.replies(1)[0] == 1

    return tick_fn


def run_fcall(name: str, pack: Callable[[Tick], list[bytes | str]]) -> Design:
    def tick_fn(conn: Conn, tick: Tick) -> bool:
        args = [OWNER, PREFIX, PRICES, tick.tick_map, *pack(tick)]
        conn.send(hiredis.pack_command(("FCALL", name, 2, LEASE, LATEST, *args)))
        reply = conn.replies(1)[0]
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"FCALL {name}: {reply}")
        return reply == 1

    return tick_fn


def run_multi(conn: Conn, tick: Tick) -> bool:
    conn.send(hiredis.pack_command(("WATCH", LEASE)) + hiredis.pack_command(("GET", LEASE)))
    if conn.replies(2)[1] != OWNER.encode():
        conn.call("UNWATCH")
        return False
    pairs = interleave(tick)
    parts = [hiredis.pack_command(("MULTI",))]
    for i in range(0, len(pairs), 2 * HSET_PAIRS):
        parts.append(hiredis.pack_command(("HSET", LATEST, *pairs[i : i + 2 * HSET_PAIRS])))
    parts += [hiredis.pack_command(("PUBLISH", PREFIX + t, p))
              for t, p in zip(tick.tickers, tick.payloads, strict=True)]  # fmt: skip
    parts.append(hiredis.pack_command(("PUBLISH", PRICES, tick.tick_map)))
    parts.append(hiredis.pack_command(("EXEC",)))
    conn.send(b"".join(parts))
    return conn.replies(len(parts))[-1] is not None  # nil: the lease changed, nothing ran


def packed_args(tick: Tick) -> list[bytes | str]:
    return [b"".join(b"%s\0%s\0" % (t.encode(), p)
                     for t, p in zip(tick.tickers, tick.payloads, strict=True))]  # fmt: skip


def msgpack_args(tick: Tick) -> list[bytes | str]:
    return [msgpack_array(interleave(tick))]


def commandstats(conn: Conn) -> dict[str, tuple[int, int]]:
    """cmdstat name -> (calls, usec)."""
    info = conn.call("INFO", "commandstats")
    assert isinstance(info, bytes)
    out = {}
    for line in info.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            fields = dict(kv.split("=") for kv in rest.split(","))
            out[name[8:]] = (int(fields["calls"]), int(fields["usec"]))
    return out


def measure(name: str, design: Design, top: str, conn: Conn, server: psutil.Process,
            n: int, ticks: int) -> dict[str, object]:  # fmt: skip
    """Fencing check, a warm-up tick, then ``ticks`` ticks back to back."""
    conn.call("SET", LEASE, "someone-else")
    conn.call("DEL", LATEST)
    fenced = not design(conn, make_tick(n, 0)) and conn.call("HLEN", LATEST) == 0
    conn.call("SET", LEASE, OWNER)
    assert design(conn, make_tick(n, 0)), f"{name}: a tick under our lease was refused"
    prepared = [make_tick(n, (k + 1) * n) for k in range(ticks)]
    before, cpu0 = commandstats(conn), server.cpu_times()
    wall0 = time.perf_counter()
    for tick in prepared:
        assert design(conn, tick)
    wall = time.perf_counter() - wall0
    cpu1, after = server.cpu_times(), commandstats(conn)
    last = prepared[-1]
    assert conn.call("HGET", LATEST, last.tickers[-1]) == last.payloads[-1], name
    assert conn.call("HLEN", LATEST) == n, name
    calls = after.get(top, (0, 0))[0] - before.get(top, (0, 0))[0]
    usec = after.get(top, (0, 0))[1] - before.get(top, (0, 0))[1]
    redis_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    pack_s = time_packing(design, prepared[: min(5, ticks)])
    return {
        "design": name,
        "tickers": n,
        "ticks": ticks,
        "fenced": fenced,
        "redis_cpu_ms_per_tick": round(1000 * redis_cpu / ticks, 2),
        "redis_cmd_ms_per_tick": round(usec / 1000 / max(1, calls), 2),
        "client_pack_ms_per_tick": round(1000 * pack_s, 2),
        "wall_ms_per_tick": round(1000 * wall / ticks, 2),
        "updates_per_redis_cpu_s": round(n * ticks / redis_cpu) if redis_cpu else None,
    }


class _Sink:
    """A connection stand-in that keeps nothing: times our packing alone."""

    reader = None

    def send(self, data: bytes) -> None:
        pass

    def replies(self, k: int) -> list[object]:
        return [1] * (k - 1) + [1]

    def call(self, *args: object) -> object:
        return None


def time_packing(design: Design, ticks: list[Tick]) -> float:
    """Seconds per tick spent building the request (no I/O)."""
    sink = _Sink()
    started = time.perf_counter()
    for tick in ticks:
        if design is run_multi:  # its GET reply would be the owner
            run_multi_pack_only(tick)
        else:
            design(sink, tick)  # type: ignore[arg-type]
    return (time.perf_counter() - started) / len(ticks)


def run_multi_pack_only(tick: Tick) -> bytes:
    pairs = interleave(tick)
    parts = [hiredis.pack_command(("MULTI",))]
    for i in range(0, len(pairs), 2 * HSET_PAIRS):
        parts.append(hiredis.pack_command(("HSET", LATEST, *pairs[i : i + 2 * HSET_PAIRS])))
    parts += [hiredis.pack_command(("PUBLISH", PREFIX + t, p))
              for t, p in zip(tick.tickers, tick.payloads, strict=True)]  # fmt: skip
    parts.append(hiredis.pack_command(("PUBLISH", PRICES, tick.tick_map)))
    parts.append(hiredis.pack_command(("EXEC",)))
    return b"".join(parts)


def start_redis(port: int, workdir: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", workdir,
            "--client-output-buffer-limit", "pubsub 1gb 512mb 60"]  # fmt: skip
    proc = subprocess.Popen(["taskset", "-c", "1", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            Conn(port).call("PING")
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tickers", type=int, default=10_000)
    p.add_argument("--ticks", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2, help="every design this many times")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tick_write.json")
    args = p.parse_args(argv)
    port, workdir = free_port(), tempfile.mkdtemp(prefix="pricefeed-tickwrite-")
    proc = start_redis(port, workdir)
    try:
        conn = Conn(port)
        server = psutil.Process(proc.pid)  # taskset execs redis-server: the same process
        sha = conn.call("SCRIPT", "LOAD", EVALSHA_SCRIPT)
        assert isinstance(sha, bytes)
        conn.call("FUNCTION", "LOAD", "REPLACE", LIBRARY)
        drain(port, hiredis.pack_command(("PSUBSCRIBE", PREFIX + "*")))
        drain(port, hiredis.pack_command(("SUBSCRIBE", PRICES)))
        designs: list[tuple[str, Design, str]] = [
            ("evalsha (producer's script)", run_evalsha(sha.decode()), "evalsha"),
            ("function (same Lua, FCALL)", run_fcall("tw_pairs", interleave), "fcall"),
            ("packed-function (1 ARGV)", run_fcall("tw_packed", packed_args), "fcall"),
            ("msgpack-function (cmsgpack)", run_fcall("tw_msgpack", msgpack_args), "fcall"),
            ("multi (WATCH + native cmds)", run_multi, "exec"),
        ]
        load = open("/proc/loadavg").read().split()[:3]
        rows = []
        for round_no in range(1, args.rounds + 1):  # rounds: how much the shared machine moved
            for name, design, top in designs:
                row = measure(name, design, top, conn, server, args.tickers, args.ticks)
                rows.append({"round": round_no, **row})
                print(json.dumps(rows[-1]), flush=True)
        doc = {"load_before": load, "load_after": open("/proc/loadavg").read().split()[:3],
               "rows": rows}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"load average before {' '.join(load)}, after {' '.join(doc['load_after'])}")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
