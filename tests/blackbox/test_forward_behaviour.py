"""Forwarding behaviour on real loopback sockets with TLS, using a fake gate
(tests/support_http_gateway.py) where a decision must be steered: WebSocket closed by the
registry (WS-04), upstream down / slow, client gone, connection age, Deferred and local decisions.
"""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.client import Client
from tests.harness.gateway import GatewayProcess
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import free_port, wait_for
from tests.harness.wire import read_ws_frame, ws_frame

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("fwdpki"))


@pytest.fixture(scope="module")
def up() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as s:
        yield s


@pytest.fixture(scope="module")
def gw(pki: Pki, up: RecordingUpstream) -> Iterator[GatewayProcess]:
    with GatewayProcess({"upstream": up.url, "overrides": {
            "upstream": {"read_timeout": 1.5, "connect_timeout": 1.0},
            "listen": {"max_connection_age": 0},
            "limits": {"max_body_unauthenticated": 1000}}}, pki) as g:
        yield g


def _ws_open(gw: GatewayProcess, pki: Pki, session: str, path: str = "/ws-hello") -> Client:
    c = Client(gw.port, pki)
    c.send((f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Origin: https://localhost\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
            f"X-Test-Session: {session}\r\n\r\n").encode())
    r = c.read_reply()
    assert r.status == 101, r
    return c


def test_ws_04_registry_closes_tunnel_with_1008(gw: GatewayProcess, pki: Pki, up: RecordingUpstream) -> None:
    """Ending the session closes its WebSocket: the client gets a close frame 1008, the upstream 1008."""
    c = _ws_open(gw, pki, "sess-ws4")
    assert read_ws_frame(c.rd) == (1, b"hello from upstream")
    c.send(ws_frame(1, b"ping 1"))
    assert read_ws_frame(c.rd) == (1, b"ping 1")
    other = _ws_open(gw, pki, "sess-other")
    with Client(gw.port, pki) as admin:
        assert admin.request("GET", "/_gate/close-session/sess-ws4").json() == {"closed": 1}
    fr = read_ws_frame(c.rd)
    assert fr is not None and fr[0] == 8
    assert struct.unpack("!H", fr[1][:2])[0] == 1008 and fr[1][2:] == b"session ended"
    assert c.at_eof(5)
    wait_for(lambda: 1008 in up.ws_close_codes, 5, "upstream close frame")
    other.send(ws_frame(1, b"still here"))  # other sessions are untouched
    assert read_ws_frame(other.rd) == (1, b"hello from upstream")
    assert read_ws_frame(other.rd) == (1, b"still here")
    other.close()
    c.close()
    with Client(gw.port, pki) as admin:
        wait_for(lambda: admin.request("GET", "/_gate/count").json()["registered"] == 0, 5, "tunnels unregistered")


def test_websocket_large_messages_both_ways(gw: GatewayProcess, pki: Pki) -> None:
    c = _ws_open(gw, pki, "sess-big", "/ws")
    for size in (10, 70000, 2_000_000):
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        c.send(ws_frame(2, payload))
        assert read_ws_frame(c.rd) == (2, payload)
    c.close()


def test_upstream_down_502_without_internals(tmp_path: Path, pki: Pki) -> None:
    port = free_port()
    with GatewayProcess({"upstream": f"http://127.0.0.1:{port}"}, pki) as g, Client(g.port, pki) as c:
        r = c.request("GET", "/")
        assert r.status == 502 and r.header("Connection") == "close"
        assert str(port).encode() not in r.body and b"127.0.0.1" not in r.body and b"refused" not in r.body.lower()


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_upstream_down_page_for_a_browser(tmp_path: Path, pki: Pki) -> None:
    """A browser's page load gets certgate's page (CSP, no internals); a HEAD or a script's call
    still gets the plain answer."""
    port = free_port()
    with GatewayProcess({"upstream": f"http://127.0.0.1:{port}"}, pki) as g:
        with Client(g.port, pki) as c:
            r = c.request("GET", "/console/", headers=[("Accept", BROWSER_ACCEPT)])
        assert r.status == 502 and r.header("Connection") == "close", r.body
        assert r.header("Content-Type") == "text/html; charset=utf-8"
        assert r.header("Content-Security-Policy") == "default-src 'none'; style-src 'unsafe-inline'"
        assert r.header("Cache-Control") == "no-store" and r.header("X-Frame-Options") == "DENY"
        assert b"<h1>The console is not reachable</h1>" in r.body and b"Reload this page" in r.body
        assert str(port).encode() not in r.body and b"127.0.0.1" not in r.body and b"console/" not in r.body
        with Client(g.port, pki) as c:
            r = c.request("HEAD", "/console/", headers=[("Accept", BROWSER_ACCEPT)])
        assert r.status == 502 and not (r.header("Content-Type") or "").startswith("text/html")
        with Client(g.port, pki) as c:
            r = c.request("GET", "/api/", headers=[("Accept", "application/json")])
        assert r.status == 502 and r.header("Content-Type") == "text/plain; charset=utf-8"


def test_slow_upstream_504(gw: GatewayProcess, pki: Pki) -> None:
    with Client(gw.port, pki) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/slow/4")
        assert r.status == 504 and time.monotonic() - t0 < 3.5
        assert b"upstream" in r.body and b"slow" not in r.body
    with Client(gw.port, pki) as c:
        r = c.request("GET", "/slow/4", headers=[("Accept", BROWSER_ACCEPT)])
        assert r.status == 504 and r.header("Content-Type") == "text/html; charset=utf-8"
        assert b"<h1>The console did not answer in time</h1>" in r.body and b"slow" not in r.body


def test_client_gone_aborts_upstream_request(gw: GatewayProcess, pki: Pki, up: RecordingUpstream) -> None:
    """A client that disconnects mid-upload: the upstream connection is cut, no request completes."""
    before_closed = up.closed_connections
    n_before = len(up.requests)
    c = Client(gw.port, pki)
    c.send(b"PUT /gone HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 1_000_000)
    wait_for(lambda: up.connections > 0, 5, "upstream connection")
    threading.Event().wait(0.3)
    c.sock.close()
    wait_for(lambda: up.closed_connections > before_closed, 10, "upstream connection closed by the gateway")
    assert "/gone" not in up.paths()[n_before:]


def test_deferred_local_and_denied_decisions(gw: GatewayProcess, pki: Pki, up: RecordingUpstream) -> None:
    with Client(gw.port, pki) as c:
        r = c.request("GET", "/_gate/deferred/x")
        assert r.status == 200 and r.json()["target"] == "/_gate/deferred/x"
        r = c.request("POST", "/_gate/local", body=b"abc" * 1000)
        assert r.json()["local"] is True and r.json()["len"] == 3000
        n = len(up.requests)
        r = c.request("POST", "/_gate/deny", body=b"secret" * 10)
        assert r.status == 401
        assert c.request("GET", "/after").status == 200  # same connection still usable
        assert [x.target for x in up.requests[n:]] == ["/after"]


def test_unauthenticated_body_limit(gw: GatewayProcess, pki: Pki, up: RecordingUpstream) -> None:
    """Forward without account/session: bodies over max_body_unauthenticated get 413, never forwarded."""
    n = len(up.requests)
    with Client(gw.port, pki) as c:
        assert c.request("POST", "/anon/small", body=b"x" * 1000).json()["body_len"] == 1000
    with Client(gw.port, pki) as c:
        assert c.request("POST", "/anon/big", body=b"x" * 1001).status == 413
    with Client(gw.port, pki) as c:
        c.send(b"POST /anon/chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n")
        assert c.read_reply().status == 413
    with Client(gw.port, pki) as c:
        assert c.request("GET", "/marker-anon").status == 200
    assert [x.target for x in up.requests[n:]] == ["/anon/small", "/marker-anon"]


def test_connection_age_closes(pki: Pki, up: RecordingUpstream) -> None:
    """max_connection_age: a response after the age carries Connection: close and the socket closes;
    an idle connection is closed at that age (not left for the browser to send a request on)."""
    with GatewayProcess({"upstream": up.url, "overrides": {"listen": {"max_connection_age": 1.0}}}, pki) as g:
        with Client(g.port, pki) as c:
            r = c.request("GET", "/age1")
            assert r.status == 200 and r.header("Connection") is None
            r = c.request("GET", "/slow/1.2")  # busy when the age is reached
            assert r.status == 200 and r.header("Connection") == "close"
            assert c.at_eof(5)
        with Client(g.port, pki) as c:
            r = c.request("GET", "/age3")
            assert r.status == 200 and r.header("Connection") is None
            assert c.at_eof(5)  # idle: closed by certgate about 1 s after the handshake


def test_upstream_keepalive_reused(gw: GatewayProcess, pki: Pki, up: RecordingUpstream) -> None:
    with Client(gw.port, pki) as c:
        ids = {c.request("GET", f"/ka/{i}").json()["conn_id"] for i in range(5)}
    assert len(ids) == 1


def test_http10_keepalive(gw: GatewayProcess, pki: Pki) -> None:
    with Client(gw.port, pki) as c:
        c.send(b"GET /h10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_reply()
        assert r.status == 200 and r.header("Connection") == "keep-alive"
        c.send(b"GET /h10b HTTP/1.0\r\n\r\n")
        r = c.read_reply()
        assert r.status == 200 and r.json()["target"] == "/h10b"


def test_chunked_and_close_delimited_downloads(gw: GatewayProcess, pki: Pki) -> None:
    with Client(gw.port, pki) as c:
        r = c.request("GET", "/bytes/300000?chunked=1")
        assert len(r.body) == 300000 and r.header("Transfer-Encoding") == "chunked"
        r = c.request("GET", "/bytes/300000?close=1")
        assert len(r.body) == 300000 and r.header("Transfer-Encoding") == "chunked"
        assert c.request("GET", "/still-open").status == 200  # HTTP/1.1 client kept alive
    # A truncated upstream body is never presented as complete: the client connection is cut.
    with Client(gw.port, pki) as c:
        c.send(b"GET /truncate HTTP/1.1\r\nHost: localhost\r\n\r\n")
        with pytest.raises((EOFError, OSError)):
            c.read_reply()
