"""The HTTP layer of the real `pricefeed gateway` process under attack and odd clients:
header limits, half-sent requests, connection bounds, unusable resume ids, the Host
allowlist, security headers, HEAD and HTTP/1.0 (docs/RELIABILITY.md, "HTTP layer").
test_proxy.py runs the same attacks against the nginx config in front of it."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import orjson
import psutil
import pytest

from tests.helpers import rawhttp
from tests.helpers.poll import wait_for
from tests.helpers.system import System, metrics, rss_mb, status, system

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.e2e]

TIMEOUT_S = 1.0  # PRICEFEED_REQUEST_TIMEOUT of the "fast" gateway
MAX_HEAD = 32 * 1024
MAX_PENDING = 1024  # gateway.protocol.HttpLimits.max_pending


@pytest.fixture(scope="module")
def gw(redis_url: str) -> Iterator[System]:
    """A producer; gateway 0 with a 1 s request timeout, gateway 1 with the default."""
    with system(redis_url, gateways=0) as sys:
        sys.start_gateway(PRICEFEED_REQUEST_TIMEOUT=str(TIMEOUT_S))
        sys.start_gateway()
        for url in sys.urls:
            wait_for(lambda u=url: status(u, "/api/ready") == 200, 30, 0.05, f"{url} ready")
        yield sys


def _settle(url: str, baseline: float) -> None:
    """Wait until the gateway holds no more descriptors than before the scenario."""
    wait_for(lambda: metrics(url)["pricefeed_gateway_open_fds"] <= baseline, 15, 0.1,
             "descriptors given back")


def test_headers_past_32_kb_get_431_and_the_memory_stays_bounded(gw):
    port, pid = gw.ports[0], gw.gateways[0].proc.pid
    before = rss_mb(pid)
    with ThreadPoolExecutor(5) as pool:  # five at once, as the attack did
        answers = list(pool.map(lambda _: rawhttp.header_bomb(port), range(5)))
    for code, answer in answers:
        assert code == 431, answer[:200]
        assert b'"detail"' in answer and b"application/json" in answer
    assert rss_mb(pid) - before < 20, (before, rss_mb(pid))  # was +500 MB, held
    assert status(gw.urls[0], "/api/health") == 200
    # Just under the limit still works: a big cookie is no attack.
    cookie = "c=" + "x" * (MAX_HEAD - 1024)
    assert httpx.get(gw.urls[0] + "/api/prices", headers={"Cookie": cookie}).status_code == 200


def test_half_sent_requests_get_408_within_the_request_timeout_and_free_their_tasks(gw):
    url, port = gw.urls[0], gw.ports[0]
    tasks_before = metrics(url)["pricefeed_gateway_asyncio_tasks"]
    fds_before = metrics(url)["pricefeed_gateway_open_fds"]
    started = time.monotonic()
    with rawhttp.half_sent(port, per_kind=50) as items:
        rawhttp.wait_closed(items, started)
    for item in items:
        assert rawhttp.status_of(item.answer) == 408, (item.kind, item.answer[:200])
        # Each deadline runs from its request's first byte: the timeout plus scheduling.
        assert item.closed_after_s < TIMEOUT_S + 5, (item.kind, item.closed_after_s)
    _settle(url, fds_before)
    assert metrics(url)["pricefeed_gateway_asyncio_tasks"] <= tasks_before
    log = gw.gateways[0].output()
    assert "Traceback" not in log and "ERROR" not in log


def test_connections_still_sending_their_request_are_bounded_oldest_closed_first(gw):
    url, port = gw.urls[1], gw.ports[1]  # the default timeout: nothing expires meanwhile
    fds_before = metrics(url)["pricefeed_gateway_open_fds"]
    socks = [rawhttp.connect(port) for _ in range(MAX_PENDING + 8)]
    try:
        for sock in socks[:8]:  # the oldest eight, sent nothing yet, were closed
            assert rawhttp.status_of(rawhttp.read_all(sock)) == 503
        # The gateway still serves, and still accepts new connections.
        assert status(url, "/api/health") == 200
    finally:
        for sock in socks:
            sock.close()
    _settle(url, fds_before)
    assert "were still sending their request" in gw.gateways[1].output()


@contextlib.contextmanager
def _fd_limit(pid: int, soft: int) -> Iterator[None]:
    proc = psutil.Process(pid)
    old = proc.rlimit(psutil.RLIMIT_NOFILE)
    proc.rlimit(psutil.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        proc.rlimit(psutil.RLIMIT_NOFILE, old)


def test_near_the_fd_limit_new_connections_get_503_and_one_log_line(gw):
    url, port, service = gw.urls[1], gw.ports[1], gw.gateways[1]
    fds_before = metrics(url)["pricefeed_gateway_open_fds"]
    lines_before = service.output().count("refusing new connections")
    with _fd_limit(service.proc.pid, 256):  # 128 kept in reserve: 128 connections
        socks = [rawhttp.connect(port) for _ in range(170)]
        try:
            refused = [s for s in socks[140:] if rawhttp.status_of(rawhttp.read_all(s)) == 503]
            assert len(refused) == 30
        finally:
            for sock in socks:
                sock.close()
        _settle(url, fds_before)
        assert status(url, "/api/health") == 200  # served again, limit still low
    assert service.output().count("refusing new connections") - lines_before == 1


def _arabic_indic(event_id: str) -> str:
    return event_id.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))


def _first_event_tickers(port: int, extra_header: bytes = b"", query: str = "") -> set[str]:
    raw = (b"GET /api/stream/prices" + query.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
           + extra_header + b"\r\n")
    data = rawhttp.head_and_first_frames(port, raw, frames=3)  # retry, reset, snapshot
    head, _, body = data.partition(b"\r\n\r\n")
    assert rawhttp.status_of(head) == 200, head
    assert b"event: reset\r\n" in body, body[:300]  # an unusable id: the reset comes first
    datas = [orjson.loads(line[6:]) for line in body.split(b"\r\n") if line.startswith(b"data: ")]
    return set(next(d for d in datas if d != {"reason": "resync"}))


def test_an_unusable_last_event_id_gets_a_full_snapshot_and_no_traceback(redis_url):
    with system(redis_url) as sys:
        port, url = sys.ports[0], sys.urls[0]
        with httpx.Client(base_url=url, timeout=10) as client:
            with client.stream("GET", "/api/stream/prices") as response:
                last_id = next(line for line in response.iter_lines()
                               if line.startswith("id: "))[4:]
        sys.producers[0].stop()  # the cache holds still: a resume would send nothing newer
        everything = set(httpx.get(url + "/api/prices").json())
        assert len(everything) == 5
        resumes = [(b"Last-Event-ID: \xb2\r\n", ""), (b"Last-Event-ID: \xb9\r\n", ""),
                   (b"Last-Event-ID: \xb3\r\n", ""), (b"", "?last_event_id=%C2%B2"),
                   (b"", "?last_event_id=" + quote(_arabic_indic(last_id)))]
        for header, query in resumes:
            assert _first_event_tickers(port, header, query) == everything, (header, query)
        for _ in range(50):  # the report: 50 requests wrote 1,450 log lines
            raw = b"GET /api/stream/prices?last_event_id=%C2%B2 HTTP/1.1\r\nHost: localhost\r\n"
            rawhttp.head_and_first_frames(port, raw + b"\r\n", frames=2)
        log = sys.gateways[0].output()
    assert "Traceback" not in log and "ERROR" not in log


def test_head_of_the_page_and_health_is_200_without_a_body(gw):
    for path in ("/", "/api/health"):
        answer = rawhttp.request(gw.ports[0], f"HEAD {path} HTTP/1.1\r\nHost: localhost\r\n"
                                 "Connection: close\r\n\r\n".encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert rawhttp.status_of(head) == 200, head
        assert body == b""
    assert b"text/html" in rawhttp.request(
        gw.ports[0], b"HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")


def test_an_http_1_0_stream_client_gets_the_events_unframed(gw):
    raw = b"GET /api/stream/prices HTTP/1.0\r\nHost: localhost\r\n\r\n"
    data = rawhttp.head_and_first_frames(gw.ports[0], raw, frames=2)
    head, _, body = data.partition(b"\r\n\r\n")
    headers = head.lower()
    assert rawhttp.status_of(head) == 200
    assert b"transfer-encoding" not in headers
    assert b"connection: close" in headers and b"keep-alive" not in headers
    assert body.startswith(b"retry: 1000\r\n\r\nid: ")  # no chunk-size line before it


def _host_answer(port: int, host: str, method: str = "GET", path: str = "/api/prices",
                 body: bytes = b"", origin: str = "") -> int:
    extra = f"Origin: {origin}\r\n" if origin else ""
    raw = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json"
           f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    return rawhttp.status_of(rawhttp.request(port, raw))


def test_a_foreign_host_is_refused_so_dns_rebinding_reads_and_writes_nothing(gw):
    port = gw.ports[0]
    watchlist = gw.redis().smembers(gw.keys.watchlist)
    rebinding = {"host": "attacker.example", "origin": "http://attacker.example"}
    assert _host_answer(port, **rebinding, method="POST", path="/api/watchlist",
                        body=b'{"ticker": "EVIL"}') == 400
    for path in ("/api/prices", "/api/ready", "/metrics", "/api/stream/prices", "/"):
        assert _host_answer(port, "attacker.example", path=path) == 400, path
    assert gw.redis().smembers(gw.keys.watchlist) == watchlist
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert _host_answer(port, host) == 200, host
    assert _host_answer(port, "attacker.example", path="/api/health") == 200  # probes


def test_allowed_hosts_lists_the_names_a_public_gateway_answers_to(gw):
    service = gw.start_gateway(PRICEFEED_ALLOWED_HOSTS="prices.example,.corp.example")
    port = gw.ports[-1]
    try:
        wait_for(lambda: status(gw.urls[-1], "/api/health") == 200, 30, 0.05, "gateway up")
        for host in ("prices.example", "prices.example:443", "a.corp.example", "corp.example"):
            assert _host_answer(port, host) == 200, host
        for host in ("localhost", "attacker.example", "prices.example.attacker.example"):
            assert _host_answer(port, host) == 400, host
    finally:
        service.stop()


def test_ready_does_not_show_the_producers_host_and_pid(gw):
    producer_id = gw.redis().get(gw.keys.producer).decode()
    host, pid, _ = producer_id.split(":")
    assert host == socket.gethostname() and int(pid) == gw.producers[0].proc.pid
    response = httpx.get(gw.urls[0] + "/api/ready")
    assert response.status_code == 200
    assert "id" not in response.json()["producer"]
    assert producer_id not in response.text and f":{pid}:" not in response.text


SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY"}


def test_every_response_has_csp_nosniff_and_refuses_framing(gw):
    url, port = gw.urls[0], gw.ports[0]
    with httpx.Client(base_url=url, timeout=10) as client:
        for path in ("/", "/static/app.js", "/api/prices", "/api/nope",
                     "/static/<script>alert(1)</script>", "/api/stream/prices?tickers=,"):
            response = client.get(path)
            for name, value in SECURITY.items():
                assert response.headers.get(name) == value, (path, response.headers)
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        with client.stream("GET", "/api/stream/prices") as stream:
            assert stream.headers["x-content-type-options"] == "nosniff"
            assert "default-src 'self'" in stream.headers["content-security-policy"]
    foreign = b"GET / HTTP/1.1\r\nHost: evil\r\nConnection: close\r\n\r\n"
    for raw in (rawhttp.header_bomb(port, lines=1)[1], rawhttp.request(port, foreign)):
        lower = raw.lower()
        assert b"x-content-type-options: nosniff" in lower and b"frame-ancestors" in lower, raw
