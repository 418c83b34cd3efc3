"""GatewayProtocol parsing, limits, deadlines, pipelining and decisions (deterministic)."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from proxy.http.messages import Forward, Local, Response, json_response, text_response
from tests.harness.engine import Harness

OK2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


# --------------------------------------------------------------------------- strict parsing (HTTP-01..04)

SMUGGLING = {
    "CL.TE": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE.CL": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "TE space before colon": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "TE chunked, identity": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "TE identity, chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    "TE gzip, chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "TE xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE vertical tab": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "TE twice": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE identity": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
    "TE on HTTP/1.0": b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate CL equal": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "duplicate CL unequal": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
    "CL list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
    "CL empty": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
    "CL signed": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    "CL hex": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
    "CL overflow": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "chunk size 0x": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk ext CTL": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x01\r\nhello\r\n0\r\n\r\n",
    "chunk bare LF": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "chunk negative": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk overflow": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    "bare LF head": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare LF in header": b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
    "bare CR in header": b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    "NUL in value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    "CTL in value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "empty header name": b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
    "space in header name": b"GET / HTTP/1.1\r\nHost: a\r\nX Y: b\r\n\r\n",
    "missing Host": b"GET / HTTP/1.1\r\n\r\n",
    "two Hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "two Authorization": b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic a\r\nAuthorization: Basic b\r\n\r\n",
    "absolute-form": b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "CONNECT": b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "lower-case method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "control in target": b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
    "h2c upgrade": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                   b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    "Upgrade without Connection": b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    "websocket POST": b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n\r\nhello",
    "websocket without key": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_malformed_or_ambiguous_requests_get_400_and_never_reach_upstream(name: str) -> None:
    """HTTP-01..04, WS-02: every case is answered 400 + close; no upstream connection is made."""
    h = Harness()
    h.send(SMUGGLING[name])
    out = h.out()
    assert _status(out) == 400, out
    assert b"Connection: close" in out and h.client.lost
    # A valid head with a broken chunked body may have started a connect: it must carry nothing.
    while h.pending_connects:
        h.connect_upstream()
    assert h.upstream_received() == b""
    if not name.startswith("chunk"):
        assert h.gate.heads == [] and h.reactor.tcpClients == []


def test_browser_page_loads_get_a_page_when_the_engine_answers_itself() -> None:
    """A GET whose Accept names text/html gets certgate's page for the statuses that have one;
    a HEAD, another Accept or a status without a page keeps the plain text."""
    from twisted.internet.error import ConnectionRefusedError

    from proxy.http.wire import PAGE_TEXT, error_page_bytes

    nav = b"Accept: text/html,application/xhtml+xml;q=0.9\r\n"
    for method, accept, html in ((b"GET", nav, True), (b"HEAD", nav, False), (b"GET", b"Accept: */*\r\n", False)):
        h = Harness()
        h.send(method + b" /page HTTP/1.1\r\nHost: a\r\n" + accept + b"\r\n")
        h.fail_connect(ConnectionRefusedError("refused"))
        out = h.out()
        assert _status(out) == 502, out
        assert (b"Content-Type: text/html; charset=utf-8" in out) is html, out
        assert (b"<h1>The console is not reachable</h1>" in out) is html, out
    assert set(PAGE_TEXT) == {413, 500, 502, 504} and error_page_bytes(400) is None
    for status in PAGE_TEXT:
        page = error_page_bytes(status)
        assert page is not None and page is error_page_bytes(status)  # cached
        head, _, body = page.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status) and b"Content-Length: %d\r\n" % len(body) in head + b"\r\n"
        assert b"Connection: close" in head and b"default-src 'none'" in head


def test_http2_version_is_505() -> None:
    h = Harness()
    h.send(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")
    assert _status(h.out()) == 505 and h.reactor.tcpClients == []


def test_error_response_has_no_internal_details() -> None:
    """Our error bodies are short fixed texts."""
    h = Harness()
    h.send(SMUGGLING["CL.TE"])
    out = h.out()
    assert out.endswith(b"\r\n\r\nbad request\n")
    assert b"Transfer-Encoding" not in out.split(b"\r\n\r\n")[1]


def test_smuggled_second_request_is_decided_on_its_own() -> None:
    """HTTP-05: a valid pipelined second request reaches the gate as its own head, after the first."""
    h = Harness()
    h.send(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcdGET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [x.target for x in h.gate.heads] == [b"/a"]
    conn, t = h.connect_upstream()
    assert t.value().endswith(b"\r\n\r\nabcd")
    h.respond(conn, OK2)
    assert [x.target for x in h.gate.heads] == [b"/a", b"/admin"]


# --------------------------------------------------------------------------- limits (HTTP-09)

def test_request_line_too_long_414() -> None:
    h = Harness({"limits": {"max_request_line": 300}})
    h.send(b"GET /" + b"a" * 400 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert _status(h.out()) == 414 and h.reactor.tcpClients == []


def test_request_line_dribbled_414() -> None:
    """A long URL sent in small pieces is cut as soon as it passes the limit."""
    h = Harness({"limits": {"max_request_line": 300}})
    h.send(b"GET /")
    for _ in range(40):
        if h.client.lost:
            break
        h.send(b"a" * 10)
    assert _status(h.out()) == 414


def test_too_many_headers_431() -> None:
    h = Harness({"limits": {"max_headers": 10}})
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(12)) + b"\r\n")
    assert _status(h.out()) == 431 and h.reactor.tcpClients == []


def test_header_block_too_large_431() -> None:
    h = Harness({"limits": {"max_header_size": 2048}})
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 3000 + b"\r\n\r\n")
    assert _status(h.out()) == 431 and h.reactor.tcpClients == []


def test_unfinished_huge_header_dribbled_431() -> None:
    """A header that never ends is cut by the raw byte guard, not buffered without bound."""
    h = Harness({"limits": {"max_header_size": 2048, "max_request_line": 256}})
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
    for _ in range(100):
        if h.client.lost:
            break
        h.send(b"v" * 100)
    assert _status(h.out()) == 431


def test_body_over_unauthenticated_limit_413_not_forwarded() -> None:
    """A Forward without account/session is unauthenticated: Content-Length over the limit -> 413."""
    h = Harness({"limits": {"max_body_unauthenticated": 1000}})
    h.gate.next = lambda head: Forward(h.config.default_route)
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n")
    out = h.out()
    assert _status(out) == 413 and b"Connection: close" in out
    assert h.reactor.tcpClients == []


def test_chunked_body_over_unauthenticated_limit_413_not_forwarded() -> None:
    """An unauthenticated chunked body is collected first; past the limit -> 413, nothing upstream."""
    h = Harness({"limits": {"max_body_unauthenticated": 1000}})
    h.gate.next = lambda head: Forward(h.config.default_route)
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        h.send(b"200\r\n" + b"x" * 512 + b"\r\n")
    assert _status(h.out()) == 413
    assert h.reactor.tcpClients == []


def test_small_unauthenticated_chunked_body_sent_with_content_length() -> None:
    h = Harness()
    h.gate.next = lambda head: Forward(h.config.default_route)
    h.send(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    conn, t = h.connect_upstream()
    sent = t.value()
    assert b"Content-Length: 5\r\n" in sent and sent.endswith(b"\r\n\r\nabcde")
    assert b"Transfer-Encoding" not in sent


def test_authenticated_max_body_limit() -> None:
    h = Harness({"limits": {"max_body": 10}})
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    assert _status(h.out()) == 413 and h.reactor.tcpClients == []


def test_pipeline_limit() -> None:
    h = Harness({"limits": {"max_pipeline": 2}})
    h.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(5)))
    conn, t = h.connect_upstream()
    h.respond(conn, OK2)
    h.respond(conn, OK2)
    out = h.out()
    assert out.count(b"200 OK") == 2 and b"503 Service Unavailable" in out and h.client.lost


# --------------------------------------------------------------------------- deadlines (HTTP-10)

def test_header_deadline_cuts_slowloris() -> None:
    """A head dribbled byte by byte is cut header_timeout after it began: 408 + close."""
    h = Harness({"listen": {"header_timeout": 5.0, "idle_timeout": 100.0}})
    for ch in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ":
        h.send(bytes([ch]))
        h.reactor.advance(0.1)
    assert not h.client.lost
    h.reactor.advance(5.0)
    assert h.client.lost and _status(h.out()) == 408
    assert h.reactor.tcpClients == []


def test_idle_keepalive_timeout_closes() -> None:
    h = Harness({"listen": {"idle_timeout": 30.0}})
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    h.respond(conn, OK2)
    h.reactor.advance(29)
    assert not h.client.lost
    h.reactor.advance(2)
    assert h.client.lost


def test_connection_age_adds_connection_close() -> None:
    """After max_connection_age the next response says Connection: close and the connection ends."""
    h = Harness({"listen": {"max_connection_age": 60.0, "idle_timeout": 120.0},
                 "sessions": {"presence_interval": 100.0}})
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    h.respond(conn, OK2)
    assert b"Connection: close" not in h.out()
    h.reactor.advance(50)
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # a long request: still busy when the age is reached
    h.reactor.advance(11)
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h.respond(conn, OK2)
    out = h.out()
    assert b"Connection: close\r\n" in out and h.client.lost


def test_connection_age_on_local_responses() -> None:
    h = Harness({"listen": {"max_connection_age": 10.0}})
    d: Deferred = Deferred()
    h.gate.next = lambda head: d  # a decision that takes past the connection's maximum age
    h.reactor.advance(9)
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h.reactor.advance(2)
    d.callback(text_response(200, "local"))
    assert b"Connection: close\r\n" in h.out() and h.client.lost


def test_idle_connection_closes_at_its_maximum_age_not_only_after_idle_timeout() -> None:
    """A browser sends any request on any idle pooled connection: none outlives its maximum age."""
    h = Harness({"listen": {"max_connection_age": 60.0, "idle_timeout": 120.0},
                 "sessions": {"presence_interval": 20.0}})
    assert h.factory.max_connection_age == 20.0  # capped by presence_interval
    h.reactor.advance(15)
    h.gate.next = lambda head: text_response(200, "local")
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert b"Connection: close" not in h.out()  # 15 s old: kept alive...
    h.reactor.advance(4.9)
    assert not h.client.lost
    h.reactor.advance(0.2)  # ...but closed, idle, 20 s after it began (not 120 s after the response)
    assert h.client.lost


def test_never_used_connection_closes_at_its_maximum_age() -> None:
    h = Harness({"listen": {"max_connection_age": 0.0, "idle_timeout": 120.0},
                 "sessions": {"presence_interval": 30.0}})
    h.reactor.advance(29.9)
    assert not h.client.lost
    h.reactor.advance(0.2)  # max_connection_age = 0 still means presence_interval
    assert h.client.lost and h.out() == b""


def test_default_maximum_age_follows_grace() -> None:
    """No presence_interval set: grace / 4 (at most 30 s) is the presence interval and the age cap."""
    assert Harness({"sessions": {"grace": 20.0}}).factory.max_connection_age == 5.0
    assert Harness().factory.max_connection_age == 30.0


def test_upstream_read_timeout_504() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, t = h.connect_upstream()
    h.reactor.advance(h.config.default_route.read_timeout + 1)
    out = h.out()
    assert _status(out) == 504 and b"upstream" in out and t.aborted
    assert b"127.0.0.1" not in out and b"8080" not in out


def test_upstream_connect_refused_502_and_timeout_504() -> None:
    from twisted.internet.error import ConnectionRefusedError, TimeoutError

    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h.fail_connect(ConnectionRefusedError("refused"))
    out = h.out()
    assert _status(out) == 502 and b"refused" not in out and b"upstream.test" not in out
    h2 = Harness()
    h2.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h2.fail_connect(TimeoutError())
    assert _status(h2.out()) == 504


def test_handshake_deadline_only_for_tls() -> None:
    """The plain (profiling) factory identifies at connect; identify() returning None aborts."""
    h = Harness(identify=lambda t, now: None)
    assert h.client.aborted


# --------------------------------------------------------------------------- pipelining and decisions

def test_pipelined_requests_answered_in_order_each_decided() -> None:
    """HTTP-05: the second request is decided and sent only after the first response ended."""
    h = Harness()
    h.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [x.target for x in h.gate.heads] == [b"/1"]
    conn, t = h.connect_upstream()
    assert t.value().count(b"GET ") == 1
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
    h.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3")
    out = h.out()
    assert [x.target for x in h.gate.heads] == [b"/1", b"/2", b"/3"]
    assert out.index(b"\r\n\r\n1") < out.index(b"\r\n\r\n2") < out.index(b"\r\n\r\n3")
    assert len(h.reactor.tcpClients) == 1  # one upstream connection, reused


def test_deferred_decision() -> None:
    """A Deferred decision holds the request (and parsing) until it fires."""
    h = Harness()
    ds: list[Deferred[object]] = []

    def later(head: object) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        ds.append(d)
        return d

    h.gate.next = later
    h.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert h.reactor.tcpClients == [] and h.client.producerState == "paused"
    ds[0].callback(Forward(h.config.default_route, account="alice"))
    assert h.client.producerState == "producing"
    conn, t = h.connect_upstream()
    assert t.value().startswith(b"GET /1 ")


def test_deferred_decision_failure_is_500_without_details() -> None:
    h = Harness()
    d: Deferred[object] = Deferred()
    h.gate.next = lambda head: d
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    d.errback(RuntimeError("redis exploded at 10.1.1.1"))
    out = h.out()
    assert _status(out) == 500 and b"redis" not in out


def test_local_response_discards_body_and_keeps_alive() -> None:
    """A Response decision answers at once; a small body is read and dropped, never forwarded."""
    h = Harness()
    h.gate.next = lambda head: text_response(401, "login required")
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    out = h.out()
    assert out.count(b"HTTP/1.1 401 Unauthorized") == 2 and not h.client.lost
    assert h.reactor.tcpClients == []
    assert [x.target for x in h.gate.heads] == [b"/", b"/x"]


def test_local_handler_gets_body() -> None:
    h = Harness()
    got = []

    def handler(head: object, body: bytes, conn: object) -> Response:
        got.append(body)
        return json_response(200, {"n": len(body)})

    h.gate.next = lambda head: Local(handler, max_body=100)
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
    assert got == []
    h.send(b"def")
    assert got == [b"abcdef"] and b'{"n":6}' in h.out()


def test_local_handler_body_limit_413() -> None:
    h = Harness()
    h.gate.next = lambda head: Local(lambda *a: json_response(200, {}), max_body=4)
    h.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabcdef")
    assert _status(h.out()) == 413


def test_http10_keep_alive_honoured() -> None:
    """HTTP/1.0 with Connection: keep-alive stays open and is told so."""
    h = Harness()
    h.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn, t = h.connect_upstream()
    assert b"Host: upstream.test:8080\r\n" in t.value()
    h.respond(conn, OK2)
    out = h.out()
    assert b"Connection: keep-alive\r\n" in out and not h.client.lost
    h.send(b"GET / HTTP/1.0\r\n\r\n")
    h.respond(conn, OK2)
    assert b"Connection: close\r\n" in h.out() and h.client.lost


def test_expect_100_continue() -> None:
    """100 Continue is sent once the upstream connection is ready; Expect is not forwarded."""
    h = Harness()
    h.send(b"PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert h.out() == b""
    conn, t = h.connect_upstream()
    assert h.out() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert b"Expect" not in t.value()
    h.send(b"data")
    assert t.value().endswith(b"\r\n\r\ndata")


def test_expect_other_417_and_too_large_413() -> None:
    h = Harness()
    h.send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: something\r\n\r\n")
    assert _status(h.out()) == 417
    h2 = Harness({"limits": {"max_body": 3}})
    h2.send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    out = h2.out()
    assert _status(out) == 413 and b"100 Continue" not in out


def test_counters_and_metrics_gauges() -> None:
    """counters follow requests/errors; a Metrics registry reads them at scrape time."""
    from proxy.http.factory import GatewayFactory
    from proxy.observe.metrics import Metrics
    from tests.harness.engine import identity

    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = h.connect_upstream()
    h.respond(conn, OK2)
    h.send(SMUGGLING["CL.TE"])
    c = h.factory.counters
    assert (c["connections"], c["requests"], c["errors"]) == (1, 1, 1)
    m = Metrics()
    GatewayFactory(gate=h.gate, identify=identity, config=h.config, pools=h.pools, clock=h.reactor,
                   tunnels=h.tunnels, metrics=m)
    text = m.render().decode()
    assert "certgate_http_connections 0.0" in text and "certgate_http_connections_accepted_total 0.0" in text


def test_drain_closes_idle_and_finishes_in_flight() -> None:
    """drain(): idle connections close now; a busy one answers with Connection: close, then closes."""
    busy = Harness()
    busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    conn, _ = busy.connect_upstream()
    d = busy.factory.drain(10.0)
    assert not busy.client.lost
    fired: list[object] = []
    d.addCallback(fired.append)
    busy.respond(conn, OK2)
    assert b"Connection: close\r\n" in busy.out() and busy.client.lost and fired == [None]

    idle = Harness()
    assert idle.factory.drain(10.0) is not None and idle.client.lost


def test_drain_deadline_aborts_stragglers() -> None:
    h = Harness()
    h.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    h.connect_upstream()
    fired: list[object] = []
    h.factory.drain(5.0).addCallback(fired.append)
    h.reactor.advance(4.9)
    assert fired == [] and not h.client.lost
    h.reactor.advance(0.2)
    assert fired == [None] and h.client.aborted


def test_connection_close_request_body_in_later_reads_is_forwarded() -> None:
    """Connection: close ends parsing after the request, not before its body (regression)."""
    h = Harness()
    h.send(b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 6\r\n\r\n")
    conn, t = h.connect_upstream()
    h.send(b"abc")
    h.send(b"def")
    assert t.value().endswith(b"\r\n\r\nabcdef")
    h.send(b"GET /ignored HTTP/1.1\r\nHost: a\r\n\r\n")
    h.respond(conn, OK2)
    out = h.out()
    assert b"Connection: close" in out and h.client.lost
    assert [x.target for x in h.gate.heads] == [b"/u"]


def test_max_connections_refuses_before_handshake() -> None:
    """[listen] max_connections: one more connection is aborted at once and counted."""
    from tests.harness.engine import Transport

    h = Harness({"listen": {"max_connections": 1}})
    extra = Transport()
    p = h.factory.buildProtocol(None)
    extra.protocol = p
    p.makeConnection(extra)
    assert extra.aborted and h.factory.counters["refused"] == 1
    assert len(h.factory.connections) == 1 and not h.client.lost


def test_decision_that_never_comes_is_504() -> None:
    """A gate Deferred that never fires ends in 504 after read_timeout; a late answer is ignored."""
    h = Harness({"upstream": {"read_timeout": 7.0}})
    d: Deferred[object] = Deferred()
    h.gate.next = lambda head: d
    h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h.reactor.advance(6.9)
    assert h.out() == b""
    h.reactor.advance(0.2)
    assert _status(h.out()) == 504 and h.client.lost
    d.callback(text_response(200, "late"))
    assert h.out() == b""
