"""Presence as a browser exercises it, through the real gateway process.

A browser keeps several idle keep-alive connections per origin and sends a presence ping on
any of them. This test behaves the same way: a pool of TLS connections, each ping on the
*oldest* one still open (a new connection only when none is). With the default keys for
``kind = cockpit`` and a short grace, the session must outlive the grace several times while
the certificate is presented, and end about ``grace`` after the last proof when it stops.
"""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from tests.harness.client import client_context
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.sessions import get, login, session_config
from tests.harness.upstream import RecordingUpstream, fixed
from tests.harness.wait import monotonic, pause, wait_for
from tests.harness.wire import Reader

GRACE = 6.0
INTERVAL = GRACE / 4  # the derived default presence_interval
PAGE = b"<!DOCTYPE html><html><head><title>app</title></head><body>single-page app</body></html>"


@pytest.fixture
def html_upstream():
    u = RecordingUpstream(answer=fixed(PAGE, "text/html; charset=utf-8"))
    yield u
    u.close()


class PooledConn:
    """One keep-alive TLS connection presenting alice's certificate."""

    def __init__(self, port: int, pki: Pki) -> None:
        raw = socket.create_connection(("127.0.0.1", port), 5)
        self.sock = client_context(pki.client("alice"), pki.ca_pem).wrap_socket(raw, server_hostname="localhost")
        self.opened = monotonic()
        self.rd = Reader(self.sock)
        self.port = port
        self.used = False

    def closed_by_server(self) -> bool:
        self.sock.settimeout(0.01)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
            return False
        except OSError:
            return True

    def get(self, path: str, cookie: str, accept: str = "application/json") -> tuple[int, dict, bytes] | None:
        """The answer; ``None`` when a reused connection was closed before any byte of it came back.

        That is the race every HTTP/1.1 client meets when the server closes an idle connection as
        a request leaves (RFC 9112 section 9.3.1); browsers resend an idempotent request on a new
        connection then, and so does this test's caller. A fresh connection must answer.
        """
        reused, self.used = self.used, True
        self.sock.settimeout(5)
        try:
            self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost:{self.port}\r\nAccept: {accept}\r\n"
                              f"Cookie: {cookie}\r\n\r\n".encode())
            head = self.rd.until(b"\r\n\r\n")
        except (ConnectionError, ssl.SSLEOFError):
            head = None
        if head is None and reused and not self.rd.buf:
            return None
        assert head is not None, "connection closed before a response"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in hs:
            body = self.rd.exactly(int(hs["content-length"]))
        else:  # chunked (an injected page)
            body = b""
            while True:
                size = int(self.rd.until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self.rd.until(b"\r\n")
                    break
                body += self.rd.exactly(size)
                self.rd.exactly(2)
        return status, hs, body

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def test_presence_holds_with_a_browser_like_connection_pool_and_ends_at_grace(tmp_path, html_upstream):
    pki = Pki(tmp_path / "pki")
    cfg = session_config(tmp_path, pki, html_upstream.url, store="memory", sessions={"grace": GRACE},
                         extra={"upstream": {"kind": "cockpit"}, "login": {"password": "file"}})
    text = cfg.read_text()
    assert "presence_interval" not in text and "inject_presence_script" not in text  # defaults only
    with Gateway(cfg) as gw:
        cookie = login(gw.port, pki)
        pool = [PooledConn(gw.port, pki) for _ in range(3)]
        try:
            # the page itself: the presence script is injected by default on a cockpit route
            answer = pool[0].get("/app/", cookie, accept="text/html")
            assert answer is not None
            status, _, body = answer
            assert status == 200
            assert f'<script src="/.certgate/presence.js" data-interval="{INTERVAL:g}" defer>'.encode() in body
            start = last_ok = monotonic()
            oldest_used = 0.0
            while monotonic() - start < 3 * GRACE:
                pause(INTERVAL)
                for c in [c for c in pool if c.closed_by_server()]:
                    pool.remove(c)
                    c.close()
                if not pool:
                    pool.append(PooledConn(gw.port, pki))
                conn = min(pool, key=lambda c: c.opened)  # the browser may pick any: take the worst
                oldest_used = max(oldest_used, monotonic() - conn.opened)
                answer = conn.get("/.certgate/presence", cookie)
                if answer is None:  # closed by its age as the ping left: the browser resends on a new one
                    assert monotonic() - conn.opened >= INTERVAL - 0.1, "a young connection was closed"
                    pool.remove(conn)
                    conn.close()
                    conn = PooledConn(gw.port, pki)
                    pool.append(conn)
                    answer = conn.get("/.certgate/presence", cookie)
                    assert answer is not None
                status, hs, body = answer
                assert status == 200, body
                view = json.loads(body)
                if view["fresh"] is False:  # the script asks again at once, on a new connection
                    assert hs.get("connection") == "close"
                    pool.remove(conn)
                    conn.close()
                    conn = PooledConn(gw.port, pki)
                    pool.append(conn)
                    answer = conn.get("/.certgate/presence", cookie)
                    assert answer is not None and answer[0] == 200 and json.loads(answer[2])["fresh"] is True
                last_ok = monotonic()
            # no connection older than the presence interval carried a ping (the server closed them)
            assert oldest_used <= INTERVAL + 1.0, oldest_used
            # the card is pulled: no more proofs. The session ends about grace after the last one.
            for c in pool:
                c.close()
            pool = []

            # probe without a certificate (in want mode a probe with the card in would be a proof)
            wait_for(lambda: get(gw.port, pki, cookie, "/.certgate/api/session", cert=False)[0] == 401,
                     GRACE + 5, what="the session to end")
            took = monotonic() - last_ok
            assert GRACE - 1.0 <= took <= GRACE + 2.5, took
        finally:
            for c in pool:
                c.close()
