"""HTTP-01..11 and WS-01..03 (mfa-security.md) against the real gateway process (`certgate run`).

Each case asserts the answer AND that nothing reached the upstream: after the case, a marker
request is sent on a fresh connection; once the marker has arrived, the upstream's record must
hold nothing else from the case.
"""

from __future__ import annotations

import itertools
import ssl
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.client import Client
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import free_port, wait_for
from tests.harness.wire import read_ws_frame, ws_frame
from tests.unit.test_http_protocol import SMUGGLING

_marker = itertools.count()


class Env:
    def __init__(self, gw: Gateway, pki: Pki, up: RecordingUpstream) -> None:
        self.gw, self.pki, self.up = gw, pki, up
        self.port = gw.port
        self.origin = f"https://localhost:{gw.port}"

    def client(self, cert: str | None = "alice", **kw: object) -> Client:
        files = None
        if cert:
            c = self.pki.client(cert)
            files = (str(c.cert_path), str(c.key_path))
        return Client(self.port, ca_file=self.pki.ca_pem, cert_files=files, **kw)  # type: ignore[arg-type]

    def nothing_reached(self, since: int) -> None:
        """Send a marker request; when it arrives, nothing else may have arrived since ``since``."""
        m = f"/marker/{next(_marker)}"
        with self.client() as c:
            assert c.request("GET", m).status == 200
        wait_for(lambda: m in self.up.paths(), 10, f"marker {m}")
        extra = [p for p in self.up.paths()[since:] if p != m]
        assert extra == [], f"reached the upstream: {extra}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("fwdsec")
    pki = Pki(tmp / "pki")
    port = free_port()
    with RecordingUpstream() as up:
        cfg = write_config(tmp, pki, upstream=up.url, port=port, extra={
            "listen": {"header_timeout": 2, "max_connection_age": 0},
            "limits": {"max_request_line": 1024, "max_header_size": 4096, "max_headers": 50},
            "websocket": {"origins": f"https://localhost:{port}"}})
        with Gateway(cfg) as gw:
            yield Env(gw, pki, up)


def _status(reply_raw: bytes) -> int:
    return int(reply_raw.split(b" ", 2)[1])


def _send_raw(env: Env, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the gateway closes it."""
    with env.client() as c:
        c.send(data)
        c.sock.settimeout(10)
        return c.rd.rest()


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_http_01_to_04_refused_and_not_forwarded(env: Env, name: str) -> None:
    """CL.TE, TE.CL, obfuscated TE, duplicate/malformed CL, bad chunks, bare LF, NUL, obs-fold: 400."""
    since = len(env.up.requests)
    out = _send_raw(env, SMUGGLING[name])
    assert _status(out) == 400, out[:200]
    assert b"Connection: close" in out.split(b"\r\n\r\n")[0]
    env.nothing_reached(since)


def test_http_05_pipelined_in_order_each_decided(env: Env) -> None:
    """Pipelined requests come back in order; each reaches the upstream with our identity only."""
    inner = b"GET /p/x HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with env.client() as c:
        c.send(b"GET /p/1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
               b"POST /p/2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(inner) + inner +
               b"GET /p/3 HTTP/1.1\r\nHost: localhost\r\nX-Remote-User: root\r\n\r\n")
        got = [c.read_reply().json()["target"] for _ in range(3)]
    assert got == ["/p/1", "/p/2", "/p/3"]
    rec = {r.target: r for r in env.up.requests}
    assert rec["/p/2"].body_len == len(inner) and "/p/x" not in rec  # the 'smuggled' request was body bytes
    assert rec["/p/3"].header_values("x-remote-user") == ["alice"]


SPOOF = [("X-Remote-User", "root"), ("x_remote_user", "root"), ("REMOTE-USER", "root"), ("Remote_User", "root"),
         ("X-SSL-Client-Cert", "forged"), ("x-ssl-client-s-dn", "CN=root"), ("X-Client-Cert", "forged"),
         ("Client-Cert", ":Zm9yZ2Vk:"), ("client_cert_chain", ":Zm9yZ2Vk:"), ("X-Forwarded-Client-Cert", "By=x"),
         ("X-Forwarded-For", "6.6.6.6"), ("x-forwarded-proto", "http"), ("X_Forwarded_Host", "evil"),
         ("Forwarded", "for=6.6.6.6"), ("X-Real-IP", "6.6.6.6"), ("X-Remote-User", "second")]


def test_http_06_spoofed_identity_headers_stripped_then_set(env: Env) -> None:
    with env.client() as c:
        r = c.request("GET", "/spoof", headers=SPOOF + [("X-Keep", "1"), ("Origin", env.origin)],
                      host=f"localhost:{env.port}")
    hs = r.json()["headers"]
    names = [k.lower().replace("_", "-") for k, _ in hs]
    for k, _ in SPOOF:
        n = k.lower().replace("_", "-")
        if n in ("x-remote-user", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"):
            assert names.count(n) == 1, (n, hs)
        else:
            assert n not in names, (n, hs)
    d = {k.lower(): v for k, v in hs}
    assert d["x-remote-user"] == "alice" and d["x-forwarded-for"] == "127.0.0.1"
    assert d["x-forwarded-proto"] == "https" and d["host"] == f"localhost:{env.port}"
    assert d["origin"] == env.origin and d["x-keep"] == "1"


def test_http_07_connection_listing_cannot_drop_our_headers(env: Env) -> None:
    with env.client() as c:
        r = c.request("GET", "/hop", headers=[("Connection", "X-Forwarded-For, X-Remote-User, Client-Cert, X-Hop"),
                                               ("X-Hop", "1")])
    d = {k.lower(): v for k, v in r.json()["headers"]}
    assert d.get("x-remote-user") == "alice" and d.get("x-forwarded-for") == "127.0.0.1"
    assert "x-hop" not in d and "connection" not in d


def test_http_08_repeated_headers_kept_in_order_and_ambiguous_duplicates_refused(env: Env) -> None:
    with env.client() as c:
        r = c.request("GET", "/rep", headers=[("X-Multi", "1"), ("Cookie", "a=1"), ("X-Multi", "2"),
                                               ("Cookie", "b=2"), ("X-Multi", "3")])
        rec = r.json()["headers"]
        assert [v for k, v in rec if k == "X-Multi"] == ["1", "2", "3"]
        assert [v for k, v in rec if k == "Cookie"] == ["a=1", "b=2"]
        r = c.request("GET", "/headers")
        assert r.header_values("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
        assert r.header_values("X-Multi") == ["one", "two"]
        assert r.header("X-Secret") is None and r.header("Keep-Alive") is None
    since = len(env.up.requests)
    for dup in (b"Host: a\r\nHost: b\r\n", b"Host: a\r\nAuthorization: Basic a\r\nAuthorization: Basic b\r\n"):
        assert _status(_send_raw(env, b"GET /dup HTTP/1.1\r\n" + dup + b"\r\n")) == 400
    env.nothing_reached(since)


def test_http_09_limits(env: Env) -> None:
    since = len(env.up.requests)
    assert _status(_send_raw(env, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")) == 414
    many = b"".join(b"X-%d: v\r\n" % i for i in range(60))
    assert _status(_send_raw(env, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")) == 431
    assert _status(_send_raw(env, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n")) == 431
    env.nothing_reached(since)


def test_http_10_slowloris_cut_while_gateway_stays_responsive(env: Env) -> None:
    """A dribbled head is cut at header_timeout (2 s); a parallel probe is served meanwhile."""
    since = len(env.up.requests)
    with env.client() as slow:
        started = time.monotonic()
        slow.send(b"GET /slow HTTP/1.1\r\n")
        ev = threading.Event()
        closed = False
        for i in range(40):
            try:
                slow.send(b"X-%d: v\r\n" % i)
            except OSError:
                closed = True
                break
            if i == 3:
                with env.client() as probe:
                    assert probe.request("GET", "/probe").status == 200
            ev.wait(0.2)
            slow.sock.settimeout(0.01)
            try:
                if slow.rd._fill() is False:
                    closed = True
                    break
            except (TimeoutError, ssl.SSLWantReadError, OSError):
                pass
            if b"408" in bytes(slow.rd.buf):
                closed = True
                break
        assert closed or b"408" in bytes(slow.rd.buf)
        assert time.monotonic() - started < 6
    assert [p for p in env.up.paths()[since:] if p != "/probe"] == []


def test_http_11_no_http2(env: Env) -> None:
    """h2 is never negotiated; an HTTP/2 preface is refused and not forwarded."""
    since = len(env.up.requests)
    with env.client(alpn=["h2", "http/1.1"]) as c:
        assert c.sock.selected_alpn_protocol() in (None, "http/1.1")
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        c.sock.settimeout(10)
        out = c.rd.rest()
    assert out == b"" or _status(out) in (400, 505)
    env.nothing_reached(since)


KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _ws_request(path: str, origin: str, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Origin: {origin}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n").encode()


def test_ws_01_fake_upgrade_stays_http(env: Env) -> None:
    """An upstream 426/200 to an upgrade is relayed; the connection keeps speaking HTTP."""
    for code in (426, 200):
        with env.client() as c:
            c.send(_ws_request(f"/wsfake/{code}", env.origin))
            r = c.read_reply()
            assert r.status == code and r.header("Upgrade") is None
            assert c.request("GET", "/after-fake-upgrade").json()["target"] == "/after-fake-upgrade"
    with env.client() as c:
        c.send(_ws_request("/wsbad", env.origin))
        r = c.read_reply()
        assert r.status == 502


def test_ws_02_h2c_refused(env: Env) -> None:
    since = len(env.up.requests)
    out = _send_raw(env, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                         b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    assert _status(out) == 400
    env.nothing_reached(since)


def test_ws_03_foreign_origin_refused_own_origin_tunnels(env: Env) -> None:
    since = len(env.up.requests)
    out = _send_raw(env, _ws_request("/ws", "https://evil.example"))
    assert _status(out) == 403
    env.nothing_reached(since)
    with env.client() as c:
        c.send(_ws_request("/ws", env.origin))
        r = c.read_reply()
        assert r.status == 101 and r.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        c.send(ws_frame(1, b"hello through certgate"))
        assert read_ws_frame(c.rd) == (1, b"hello through certgate")
    assert env.up.requests[-1].header_values("origin") == [env.origin]
    assert env.up.requests[-1].header_values("x-remote-user") == ["alice"]


def test_client_certificate_required_upstream_never_sees_anonymous(env: Env, tmp_path: Path) -> None:
    """need mode: without a certificate no request is forwarded (the TLS layer refuses)."""
    since = len(env.up.requests)
    try:
        with env.client(cert=None) as c:
            c.send(b"GET /anon HTTP/1.1\r\nHost: a\r\n\r\n")
            c.sock.settimeout(5)
            c.rd.rest()
    except (ssl.SSLError, OSError):
        pass
    env.nothing_reached(since)
