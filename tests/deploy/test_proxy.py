"""deploy/nginx/ — the proxy docker-compose.yml publishes — run by Debian's nginx in front
of a real gateway: the stream, resume, an unusable resume id, HTTP/2 over TLS, and the
attacks of test_http_layer.py (docs/RELIABILITY.md, "Reverse proxy")."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import rawhttp
from tests.helpers.poll import wait_for
from tests.helpers.sse import events
from tests.helpers.support import ROOT, free_port
from tests.helpers.system import System, metrics, rss_mb, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONFIG = ROOT / "deploy" / "nginx"
NGINX_TIMEOUT_S = 10  # client_header_timeout / client_body_timeout in nginx.conf


@dataclass
class Proxy:
    system: System
    http_port: int
    https_port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def _localize(conf: Path, run: Path, gateway_port: int, http_port: int, https_port: int) -> None:
    """Rewrite what differs between compose and this machine (paths, addresses, ports);
    every other line runs as committed. A rewrite that finds nothing fails the test."""
    rewrites = {
        "/etc/nginx/pricefeed/": f"{conf}/",
        "/tmp/nginx/": f"{run}/",
        "server gateway:8000;": f"server 127.0.0.1:{gateway_port};",
        "listen 8080;": f"listen 127.0.0.1:{http_port};",
        "listen 8443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
    }
    found = set()
    for path in conf.glob("*.conf"):
        text = path.read_text()
        for old, new in rewrites.items():
            if old in text:
                found.add(old)
                text = text.replace(old, new)
        path.write_text(text)
    assert found == set(rewrites), set(rewrites) - found


def _certificate(certs: Path) -> None:
    """A self-signed certificate for localhost and 127.0.0.1, as a user would make one."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(certs / "privkey.pem"), "-out", str(certs / "fullchain.pem")],
        check=True, capture_output=True, timeout=60)


def enable_https(conf: Path, run: Path) -> str:
    """Run deploy/nginx/enable-https.sh as the image's entrypoint would; its line."""
    done = subprocess.run(
        [str(conf / "enable-https.sh")], check=True, capture_output=True, text=True,
        env={"PATH": os.environ["PATH"], "PRICEFEED_NGINX_CONF": str(conf),
             "PRICEFEED_NGINX_ENABLED": str(run / "enabled")}, timeout=10)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def proxy(redis_url: str) -> Iterator[Proxy]:
    root = Path(tempfile.mkdtemp(prefix="pricefeed-nginx-"))
    root.chmod(0o755)  # nginx's workers (nobody) use the temp paths under it
    conf, run = root / "conf", root / "run"
    shutil.copytree(CONFIG, conf)
    run.mkdir()
    _certificate(conf / "certs")
    http_port, https_port = free_port(), free_port()
    try:
        with system(redis_url) as sys:
            _localize(conf, run, sys.ports[0], http_port, https_port)
            assert "HTTPS with HTTP/2 on" in enable_https(conf, run)
            log = (sys.logs / f"{sys.keys.namespace}-nginx.log").open("wb")
            proc = subprocess.Popen(
                [NGINX, "-e", "stderr", "-p", str(run), "-c", str(conf / "nginx.conf"),
                 "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
            proxy = Proxy(sys, http_port, https_port, proc)
            try:
                wait_for(lambda: _status(proxy.url + "/api/ready") == 200, 20, 0.05,
                         "nginx in front of the gateway")
                yield proxy
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
                log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0


def _events(response: httpx.Response, count: int) -> Iterator[tuple[str, dict]]:
    """(id, data) of the next ``count`` data events of a streaming response."""
    for event in events(response):
        yield event.id or "", event.json()
        count -= 1
        if count == 0:
            return


def test_the_stream_through_nginx_is_live_event_by_event(proxy):
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        with client.stream("GET", "/api/stream/prices") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            seen = list(_events(response, 6))
    assert len(seen[0][1]) == 5  # the snapshot: every ticker
    for _, data in seen[1:]:  # then each tick as it happens (ticks every 0.1 s)
        newest = max(update["timestamp"] for update in data.values())
        assert time.time() - newest < 2.0, "an event was held back on the way"


def test_a_resume_through_nginx_sends_only_what_changed_since(proxy):
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        with client.stream("GET", "/api/stream/prices") as response:
            *_, (last_id, last_data) = _events(response, 3)
        held = max(update["seq"] for update in last_data.values())
        with client.stream("GET", "/api/stream/prices",
                           headers={"Last-Event-ID": last_id}) as response:
            ((_, first),) = _events(response, 1)
    assert first and all(update["seq"] > held for update in first.values())


def test_an_unusable_last_event_id_through_nginx_gets_a_full_snapshot(proxy):
    for extra, query in ((b"Last-Event-ID: \xb2\r\n", ""), (b"", "?last_event_id=%C2%B2")):
        raw = (b"GET /api/stream/prices" + query.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
               + extra + b"\r\n")
        data = rawhttp.head_and_first_frames(proxy.http_port, raw, frames=3)
        head, _, body = data.partition(b"\r\n\r\n")
        assert rawhttp.status_of(head) == 200, head
        assert b"event: reset\r\n" in body, body[:300]  # then the full snapshot
        assert b'"TSLA"' in body and b'"JPM"' in body and b'"AAPL"' in body, body[:300]
    assert "Traceback" not in proxy.system.gateways[0].output()


def _nginx_rss_mb(proxy: Proxy) -> float:
    master = psutil.Process(proxy.proc.pid)
    return sum(rss_mb(p.pid) for p in [master, *master.children()])


def test_nginx_refuses_a_header_bomb_before_the_gateway_sees_it(proxy):
    gateway_pid = proxy.system.gateways[0].proc.pid
    gateway_before, nginx_before = rss_mb(gateway_pid), _nginx_rss_mb(proxy)
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: rawhttp.header_bomb(proxy.http_port), range(5)))
    for code, answer in answers:
        assert code in (400, 431, 494), answer[:200]  # nginx: "Request Header Too Large"
    assert rss_mb(gateway_pid) - gateway_before < 5
    assert _nginx_rss_mb(proxy) - nginx_before < 20
    assert _status(proxy.url + "/api/health") == 200


def test_nginx_closes_half_sent_requests_within_its_timeouts_gateway_untouched(proxy):
    gateway = proxy.system.urls[0]
    tasks_before = metrics(gateway)["pricefeed_gateway_asyncio_tasks"]
    started = time.monotonic()
    with rawhttp.half_sent(proxy.http_port, per_kind=20) as items:
        # None of them reached the gateway: nginx holds each until it is complete.
        assert metrics(gateway)["pricefeed_gateway_asyncio_tasks"] <= tasks_before + 1
        rawhttp.wait_closed(items, started)
    for item in items:
        assert rawhttp.status_of(item.answer) in (0, 408), (item.kind, item.answer[:200])
        assert item.closed_after_s < NGINX_TIMEOUT_S + 5, (item.kind, item.closed_after_s)
    assert _status(proxy.url + "/api/health") == 200


def _curl(*args: str, timeout_s: float = 20) -> str:
    done = subprocess.run(["curl", "-sk", "--http2", *args], capture_output=True, text=True,
                          timeout=timeout_s)
    assert done.returncode in (0, 28), done.stderr  # 28: --max-time ended a stream
    return done.stdout


def test_https_serves_http2_the_page_and_the_stream(proxy):
    base = f"https://127.0.0.1:{proxy.https_port}"
    assert _curl("-o", "/dev/null", "-w", "%{http_version} %{http_code}", base + "/") == "2 200"
    streamed = _curl("-N", "--max-time", "2", base + "/api/stream/prices")
    assert streamed.startswith("retry: 1000") and streamed.count("data: {") >= 2, streamed[:300]


def test_without_a_certificate_nginx_serves_http_only():
    with tempfile.TemporaryDirectory() as tmp:
        conf, run = Path(tmp) / "conf", Path(tmp) / "run"
        shutil.copytree(CONFIG, conf, ignore=shutil.ignore_patterns("*.pem"))
        run.mkdir()
        assert "HTTPS and HTTP/2 off" in enable_https(conf, run)
        assert list((run / "enabled").iterdir()) == []
        _localize(conf, run, free_port(), free_port(), free_port())
        with contextlib.suppress(FileNotFoundError):
            (conf / "certs" / "fullchain.pem").unlink()
        checked = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", str(run),
                                  "-c", str(conf / "nginx.conf")],
                                 capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
