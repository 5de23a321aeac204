"""The producer and gateway against a real redis-server that demands a password and ACL
users limited to the namespace (the rules docs/REDIS.md gives), and one that speaks only
TLS with client certificates made here with openssl."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from tests.helpers.poll import wait_for
from tests.helpers.sse import events
from tests.helpers.support import ROOT, RedisServer, free_port
from tests.helpers.system import system
from tests.helpers.tls import make_certs

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ADMIN_PW = "admin-LEAKCHECK-pw-1"
PRODUCER_PW = "producer-LEAKCHECK-pw-2"
GATEWAY_PW = "gateway-LEAKCHECK-pw-3"


def documented_rule(user: str, ns: str, password: str) -> list[str]:
    """The ``ACL SETUSER <user> ...`` rule of docs/REDIS.md, verbatim, for namespace ``ns``."""
    for line in (ROOT / "docs" / "REDIS.md").read_text().splitlines():
        if line.startswith(f"ACL SETUSER {user} "):
            words = line.split()[3:]
            return [w.replace("NS", ns).replace(f"{user.upper()}_PASSWORD", password)
                    for w in words]
    raise AssertionError(f"docs/REDIS.md has no ACL rule for {user}")


class SecuredRedis(RedisServer):
    """A private redis-server started with extra arguments (auth, TLS)."""

    def __init__(self, extra: list[str], client_kwargs: dict[str, object]) -> None:
        super().__init__()
        self.extra, self.client_kwargs = extra, client_kwargs

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                           **self.client_kwargs)

    def start(self, timeout_s: float = 10.0) -> SecuredRedis:
        port_args = ["--port", str(self.port)]
        if "--tls-port" in self.extra:
            port_args = ["--port", "0"]
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", *port_args, "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning",
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout_s, what=f"redis-server on port {self.port}")
        return self


@pytest.fixture
def acl_redis() -> Iterator[SecuredRedis]:
    server = SecuredRedis(["--requirepass", ADMIN_PW], {"password": ADMIN_PW}).start()
    try:
        yield server
    finally:
        server.close()


def read_prices(url: str, token_params: dict[str, str] | None = None) -> dict[str, object]:
    """The first SSE event of the gateway at ``url``: the snapshot."""
    with httpx.Client(base_url=url, timeout=10) as client, \
            client.stream("GET", "/api/stream/prices", params=token_params) as response:
        assert response.status_code == 200
        for event in events(response):
            return event.json()
    raise AssertionError("the stream ended without data")


def test_acl_users_limited_to_the_namespace_run_the_whole_system(acl_redis):
    admin = acl_redis.client()
    ns = "acl-ns"
    for user, password in (("producer", PRODUCER_PW), ("gateway", GATEWAY_PW)):
        admin.execute_command("ACL", "SETUSER", user, *documented_rule(user, ns, password))
    admin.acl_log_reset()
    port = acl_redis.port
    with system(f"redis://producer:{PRODUCER_PW}@127.0.0.1:{port}/0", gateways=0,
                PRICEFEED_NAMESPACE=ns) as sys:
        gateway = sys.start_gateway(REDIS_URL=f"redis://gateway:{GATEWAY_PW}@127.0.0.1:{port}/0")
        url = sys.urls[0]
        wait_for(lambda: _status(url) == 200, 30, what="gateway ready through its ACL user")
        snapshot = read_prices(url)
        assert set(snapshot) == {"AAPL", "MSFT", "TSLA", "NVDA", "JPM"}
        with httpx.Client(base_url=url, timeout=5) as client:  # the gateway's one write
            assert client.post("/api/watchlist", json={"ticker": "IBM"}).status_code == 201
            wait_for(lambda: "IBM" in client.get("/api/prices").json(), 15,
                     what="the producer following the watchlist add")
            assert client.delete("/api/watchlist/IBM").status_code == 204
        logs = [s.log_path for s in (*sys.producers, gateway)]
    # Neither service was ever refused a command, key or channel: the rules suffice.
    assert admin.acl_log() == []
    # ...and they are limits: outside the namespace, or a gateway writing prices, is NOPERM.
    as_gateway = redis.Redis(port=port, username="gateway", password=GATEWAY_PW)
    as_producer = redis.Redis(port=port, username="producer", password=PRODUCER_PW)
    for attempt in (lambda: as_gateway.hset(f"{ns}:latest", "AAPL", "{}"),
                    lambda: as_gateway.get("other:secret"),
                    lambda: as_producer.get("other:secret"),
                    lambda: as_producer.publish("other:prices", "x"),
                    lambda: as_producer.flushall(),
                    lambda: as_gateway.config_get("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    for path in logs:
        text = path.read_text()
        assert PRODUCER_PW not in text and GATEWAY_PW not in text, text[-500:]


def test_a_wrong_redis_password_is_one_clear_line_without_the_password(acl_redis):
    ns = "acl-wrong"
    url = f"redis://gateway:not-{GATEWAY_PW}@127.0.0.1:{acl_redis.port}/0"
    with system(acl_redis.url.replace("redis://", f"redis://:{ADMIN_PW}@"), gateways=0,
                PRICEFEED_NAMESPACE=ns) as sys:
        gateway = sys.start_gateway(REDIS_URL=url)
        wait_for(lambda: "WRONGPASS" in gateway.output() or "invalid username-password"
                 in gateway.output() or "Authentication" in gateway.output(), 20,
                 what="the gateway reporting the refused password")
        assert _status(sys.urls[0]) == 503
        text = gateway.output()
    assert GATEWAY_PW not in text and ADMIN_PW not in text, text[-800:]


def _status(url: str) -> int:
    try:
        return httpx.get(url + "/api/ready", timeout=2).status_code
    except httpx.TransportError:
        return 0


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    return make_certs(tmp_path)


def test_producer_and_gateway_over_tls_with_a_client_certificate(certs):
    port = free_port()
    tls = {"ssl": True, "ssl_ca_certs": str(certs / "ca.crt"),
           "ssl_certfile": str(certs / "client.crt"), "ssl_keyfile": str(certs / "client.key")}
    server = SecuredRedis(
        ["--tls-port", str(port), "--tls-cert-file", str(certs / "server.crt"),
         "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
         "--tls-auth-clients", "yes"], tls)
    server.port = port
    server.start()
    try:
        # The server really demands the client certificate: without it, no connection.
        bare = redis.Redis(host="127.0.0.1", port=port, ssl=True, socket_timeout=3,
                           ssl_ca_certs=str(certs / "ca.crt"))
        with pytest.raises(redis.exceptions.ConnectionError):
            bare.ping()
        env = {"PRICEFEED_REDIS_CA_FILE": str(certs / "ca.crt"),
               "PRICEFEED_REDIS_CERT_FILE": str(certs / "client.crt"),
               "PRICEFEED_REDIS_KEY_FILE": str(certs / "client.key")}
        with system(f"rediss://127.0.0.1:{port}/0", **env) as sys:
            snapshot = read_prices(sys.urls[0])
            assert set(snapshot) == {"AAPL", "MSFT", "TSLA", "NVDA", "JPM"}
            raw = server.client().hget(f"{sys.keys.namespace}:latest", "AAPL")
            assert raw is not None and orjson.loads(raw)["ticker"] == "AAPL"
    finally:
        server.close()
