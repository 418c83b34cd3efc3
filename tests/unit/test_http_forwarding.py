"""Forwarding path of GatewayProtocol: framing, reuse, backpressure, cancellation, WebSocket."""

from __future__ import annotations

import struct

import pytest

from proxy.http.messages import Forward
from proxy.http.tunnel import close_frame, ws_accept
from tests.harness.wire import ws_frame
from tests.harness.engine import Harness

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_REQ = (b"GET /ws HTTP/1.1\r\nHost: console.example\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
          b"Origin: https://console.example\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
          b"Sec-WebSocket-Protocol: cockpit1\r\n\r\n")
GOOD_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ws_accept(KEY) + b"\r\nSec-WebSocket-Protocol: cockpit1\r\n\r\n")


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_forwarded_head_is_clean_and_host_origin_preserved() -> None:
    h = Harness()
    h.send(b"GET /p?q=1 HTTP/1.1\r\nHost: console.example:8443\r\nOrigin: https://console.example:8443\r\n"
           b"X-Remote-User: root\r\nx_remote_user: root\r\nConnection: X-Keep, keep-alive\r\nX-Keep: 1\r\n"
           b"Cookie: a=1\r\nCookie: b=2\r\n\r\n")
    conn, t = h.connect_upstream()
    assert t.value() == (
        b"GET /p?q=1 HTTP/1.1\r\nHost: console.example:8443\r\nOrigin: https://console.example:8443\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\nX-Remote-User: alice\r\nX-Forwarded-For: 10.0.0.7\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: console.example:8443\r\n\r\n")


def test_response_framings() -> None:
    """CL passed through; chunked re-encoded; read-until-close becomes chunked for HTTP/1.1."""
    h = Harness()
    h.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, t = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n3\r\nabc\r\n")
    h.respond(conn, b"2;ext=1\r\nde\r\n0\r\nTrailer-X: t\r\n\r\n")
    out = h.out()
    assert out == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    h.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    h.respond(conn, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil")
    h.respond(conn, b" close")
    t.protocol.connectionLost(__import__("twisted.python.failure", fromlist=["Failure"]).Failure(
        __import__("twisted.internet.error", fromlist=["ConnectionDone"]).ConnectionDone()))
    out = h.out()
    assert out == (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nuntil\r\n6\r\n close\r\n"
                   b"0\r\n\r\n")
    assert not h.client.lost  # the client connection stays usable


def test_small_response_is_one_write() -> None:
    """Head and body of a small response leave in a single transport write."""
    h = Harness()
    writes: list[bytes] = []
    orig = h.client.write
    h.client.write = lambda d: (writes.append(d), orig(d))  # type: ignore[method-assign]
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert writes == [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"]


def test_head_204_304_have_no_body_and_connection_is_reused() -> None:
    h = Harness()
    h.send(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, t = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert h.out() == b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    for code in (204, 304):
        h.send(b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        h.respond(conn, b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % code)
        out = h.out()
        assert out.startswith(b"HTTP/1.1 %d" % code) and out.endswith(b"\r\n\r\n") and b"Content-Length" not in out
    assert len(h.reactor.tcpClients) == 1 and not t.lost


def test_repeated_response_headers_kept_and_hop_by_hop_removed() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nConnection: X-Secret\r\nX-Secret: s\r\n"
                    b"Set-Cookie: b=2\r\nKeep-Alive: timeout=1\r\nContent-Length: 0\r\n\r\n")
    assert h.out() == b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"


def test_on_response_hook_adds_headers() -> None:
    h = Harness()
    seen = []

    def hook(status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        seen.append(status)
        return [(b"Set-Cookie", b"__Host-certgate=s; Secure")]

    h.gate.next = lambda head: Forward(h.config.default_route, account="alice", on_response=hook)
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n")
    assert seen == [302] and b"Set-Cookie: __Host-certgate=s; Secure\r\n" in h.out()


def test_chunked_request_body_streams_reencoded() -> None:
    h = Harness()
    h.send(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
    conn, t = h.connect_upstream()
    assert t.value().endswith(b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
    h.send(b"2\r\nef\r\n0\r\n\r\n")
    assert t.value().endswith(b"4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n")


def test_truncated_response_aborts_client() -> None:
    """An upstream that dies mid-body: the client connection is aborted, not ended cleanly."""
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, t = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    conn.connectionLost(Failure(ConnectionLost()))
    assert h.client.aborted


def test_upstream_dies_before_answering_502_and_stale_reuse_retried() -> None:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    h = Harness()
    h.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, t = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h.out()
    h.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")  # goes on the pooled connection...
    t.lost = True
    conn.connectionLost(Failure(ConnectionDone()))  # ...which the upstream had just closed
    conn2, t2 = h.connect_upstream()  # retried once on a fresh connection
    assert t2.value().startswith(b"GET /2 ")
    conn2.connectionLost(Failure(ConnectionDone()))
    out = h.out()
    assert _status(out) == 502 and b"Connection: close" in out


def test_client_gone_aborts_upstream_request() -> None:
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nxx")
    conn, t = h.connect_upstream()
    h.client.abortConnection()
    assert t.aborted
    assert h.pools.pool_for(h.config.default_route).idle == []


def test_client_gone_while_connecting_leaves_connection_unused() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h.client.abortConnection()
    conn, t = h.connect_upstream()
    assert t.value() == b""


def test_backpressure_both_ways() -> None:
    """Client write buffer full pauses the upstream read; upstream write buffer full pauses the client read."""
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
    conn, t = h.connect_upstream()
    conn.pauseProducing()  # upstream socket buffer full
    assert h.client.producerState == "paused"
    conn.resumeProducing()
    assert h.client.producerState == "producing"
    h.send(b"x" * 100)
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    h.proto.pauseProducing()  # client socket buffer full
    assert t.producerState == "paused"
    h.proto.resumeProducing()
    assert t.producerState == "producing"


def test_response_before_request_body_finished_closes() -> None:
    """An early upstream answer (e.g. 413) ends the exchange with Connection: close; no reuse."""
    h = Harness()
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
    conn, t = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert b"Connection: close" in h.out() and h.client.lost and t.lost


# --------------------------------------------------------------------------- WebSocket (WS-01..04)

def test_websocket_tunnel_after_valid_101_and_registry_close() -> None:
    h = Harness()
    h.send(WS_REQ + b"early")
    conn, t = h.connect_upstream()
    sent = t.value()
    assert b"Upgrade: websocket\r\n" in sent and b"Connection: Upgrade\r\n" in sent
    assert b"Sec-WebSocket-Key: " + KEY in sent and b"Origin: https://console.example" in sent
    h.respond(conn, GOOD_101 + ws_frame(1, b"init", mask=False))
    out = h.out()
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and out.endswith(ws_frame(1, b"init", mask=False))
    assert t.value().endswith(b"early")  # bytes the client sent early follow the 101
    assert h.tunnels.count() == 1
    h.send(b"client-bytes")
    assert t.value().endswith(b"client-bytes")
    assert h.tunnels.close_session("sess-1") == 1
    out = h.out()
    assert out == close_frame(1008, "session ended")
    assert struct.unpack("!H", out[2:4])[0] == 1008
    assert h.client.lost and t.lost and h.tunnels.count() == 0


def test_websocket_wrong_accept_is_502_not_a_tunnel() -> None:
    """WS-01: a 101 with a wrong Sec-WebSocket-Accept never becomes a tunnel."""
    h = Harness()
    h.send(WS_REQ)
    conn, t = h.connect_upstream()
    h.respond(conn, GOOD_101.replace(ws_accept(KEY), b"d3JvbmcgYWNjZXB0IHZhbHVlIQ=="))
    out = h.out()
    assert _status(out) == 502 and h.tunnels.count() == 0 and t.aborted


def test_websocket_refused_by_upstream_stays_http() -> None:
    """WS-01: a 426 answer is relayed; following client bytes are parsed as HTTP and decided."""
    h = Harness()
    h.send(WS_REQ + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, t = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
    out = h.out()
    assert out.startswith(b"HTTP/1.1 426") and h.tunnels.count() == 0
    assert [x.target for x in h.gate.heads] == [b"/ws", b"/next"]
    conn2, t2 = h.connect_upstream()  # the upgrade connection is not reused
    assert t2.value().startswith(b"GET /next HTTP/1.1\r\n")


def test_websocket_frames_smuggled_after_refusal_are_not_tunnelled() -> None:
    """WS-01: garbage after a refused upgrade is an HTTP parse error (400), never relayed."""
    h = Harness()
    h.send(WS_REQ + ws_frame(1, b"GET /admin HTTP/1.1"))
    conn, t = h.connect_upstream()
    upstream_before = t.value()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    out = h.out()
    assert out.startswith(b"HTTP/1.1 200 OK") and b"400 Bad Request" in out
    assert t.value() == upstream_before


def test_websocket_origin_allow_list_403() -> None:
    """WS-03: an Origin outside [websocket] origins is refused before the upstream."""
    h = Harness({"websocket": {"origins": ["https://console.example"]}})
    h.send(WS_REQ.replace(b"https://console.example", b"https://evil.example"))
    assert _status(h.out()) == 403 and h.reactor.tcpClients == []
    h2 = Harness({"websocket": {"origins": ["https://console.example"]}})
    h2.send(WS_REQ)
    assert h2.pending_connects == 1


def test_websocket_upstream_closes_tunnel_closes_client() -> None:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    h = Harness()
    h.send(WS_REQ)
    conn, t = h.connect_upstream()
    h.respond(conn, GOOD_101)
    conn.connectionLost(Failure(ConnectionDone()))
    assert h.client.lost and h.tunnels.count() == 0


def test_websocket_backpressure() -> None:
    h = Harness()
    h.send(WS_REQ)
    conn, t = h.connect_upstream()
    h.respond(conn, GOOD_101)
    h.proto.pauseProducing()
    assert t.producerState == "paused"
    h.proto.resumeProducing()
    conn.pauseProducing()
    assert h.client.producerState == "paused"
    conn.resumeProducing()
    assert h.client.producerState == "producing"


def test_presence_script_injected_into_session_html_pages() -> None:
    """[sessions] inject_presence_script: a session's HTML page gets the tag before </head>, chunked."""
    h = Harness({"sessions": {"inject_presence_script": True, "presence_interval": 20.0}})
    h.send(b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    page = b"<html><head><title>x</title></head><body>hi</body></html>"
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n\r\n"
              % len(page) + page[:20])
    h.respond(conn, page[20:])
    out = h.out()
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    chunks, rest = [], body
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        n = int(size_line, 16)
        if n == 0:
            break
        chunks.append(rest[:n])
        rest = rest[n + 2:]
    html = b"".join(chunks)
    assert html == page.replace(b"</head>", b'<script src="/.certgate/presence.js" data-interval="20" defer>'
                                             b"</script></head>")
    # Not for requests without a session, nor for non-HTML answers.
    h.gate.next = lambda head: Forward(h.config.default_route, account="alice")
    h.send(b"GET /page2 HTTP/1.1\r\nHost: a\r\n\r\n")
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page) + page)
    assert h.out().endswith(page)


def test_waiting_for_a_free_upstream_connection_is_bounded() -> None:
    """With max_connections reached, a waiting request gets 504 after connect+read timeout."""
    h = Harness({"upstream": {"max_connections": 1, "connect_timeout": 1.0, "read_timeout": 5.0}})
    h.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    from tests.harness.engine import Transport

    other = Transport(("10.0.0.8", 1))
    p2 = h.factory.buildProtocol(None)
    other.protocol = p2
    p2.makeConnection(other)
    p2.dataReceived(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(h.reactor.tcpClients) == 1  # waiting in the pool
    h.reactor.advance(5.5)  # the first request times out (504) and frees its slot...
    assert h.out().startswith(b"HTTP/1.1 504") and other.value() == b""
    assert len(h.reactor.tcpClients) == 2  # ...the waiter now connects, and never gets through
    h.reactor.advance(0.6)
    assert other.value().startswith(b"HTTP/1.1 504") and other.lost


def test_http10_client_gets_close_delimited_body_from_chunked_upstream() -> None:
    """An HTTP/1.0 client cannot take chunked: the body is sent raw and the connection closes."""
    h = Harness()
    h.send(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
    conn, t = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    out = h.out()
    assert out == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc" and h.client.lost
    assert h.pools.pool_for(h.config.default_route).idle == [conn]  # the upstream side ended cleanly


def _html_through(h, route_kind_route, session="sess-1"):
    page = b"<html><head></head><body>x</body></html>"
    h.gate.next = lambda head: Forward(route_kind_route, account="alice", session_id=session)
    h.send(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page)
              + page)
    return h.out()


@pytest.mark.parametrize("kind,setting,injected", [
    ("cockpit", "auto", True), ("joc", "auto", True), ("generic", "auto", False),
    ("cockpit", False, False), ("generic", True, True),
])
def test_presence_script_by_default_on_single_page_app_routes(kind, setting, injected) -> None:
    """inject_presence_script = auto (the default): session pages of kind cockpit/joc get the script."""
    import dataclasses

    h = Harness({"sessions": {"inject_presence_script": setting, "grace": 20.0}})
    route = dataclasses.replace(h.config.default_route, kind=kind)
    out = _html_through(h, route)
    assert (b'<script src="/.certgate/presence.js" data-interval="5" defer></script></head>' in out) is injected
