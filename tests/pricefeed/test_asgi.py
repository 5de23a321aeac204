"""pricefeed/asgi.py under an ASGI server we do not control (plain uvicorn): it serves,
holds one Redis subscription and stops cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.helpers import rawhttp
from tests.helpers.poll import wait_for
from tests.helpers.support import ROOT, free_port, running

pytestmark = pytest.mark.e2e


def ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


def test_the_asgi_factory_serves_under_plain_uvicorn_and_stops_on_sigterm(
        service_env, namespace, sredis, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRICEFEED_")}
    env.update(service_env)
    with running(["producer"], service_env, tmp_path / "producer.log"), \
            (tmp_path / "uvicorn.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "pricefeed.asgi:gateway",
             "--host", "127.0.0.1", "--port", str(port),
             "--timeout-graceful-shutdown", "2", "--http", "gateway.protocol:DefaultProtocol"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: ready(f"http://127.0.0.1:{port}/api/ready"), 60, 0.2, "ready")
            channel = f"{namespace}:prices"
            wait_for(lambda: dict(sredis.pubsub_numsub(channel))[channel.encode()] == 1,
                     30, 0.1, "the subscription of the app")
            prices = httpx.get(f"http://127.0.0.1:{port}/api/prices", timeout=5).json()
            assert len(prices) == 10
            # Each worker has the guarded HTTP layer: a header bomb gets 431.
            assert rawhttp.header_bomb(port, lines=1)[0] == 431
            proc.send_signal(signal.SIGTERM)
            # uvicorn itself re-raises the SIGTERM once it has shut down (status -15).
            assert proc.wait(15) in (0, -signal.SIGTERM)
            assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
