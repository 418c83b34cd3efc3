"""Property-based fuzzing (hypothesis, fixed seed, bounded) of the request-target canonicaliser
and of the HTTP head parser as the gateway feeds it (llhttp through ``GatewayProtocol``).

Canonicaliser: never anything but a result or TargetError; the result is its own canonical
form, keeps the query, holds no empty/dot segment even after one decoding (no output escapes
the root); the fast path agrees with the full rule. Through the real HTTP layer: the target
the gate decided on is byte for byte the target the upstream receives, and a refused target
reaches neither. Head parser: arbitrary and mutated heads never raise and never get anything
but the gate's answer or a clean 4xx/505 from certgate (never a 5xx of its own making).
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import unquote_to_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.http.messages import Response
from proxy.paths import TargetError, _normalise, _remove_dots, canonical_path, canonical_target, same_login_path, \
    split_target
from tests.harness.joc import jetty_path
from tests.harness.path_spellings import JOC_LOGIN
from tests.harness.engine import Harness

BOUNDED = settings(derandomize=True, max_examples=1000, deadline=timedelta(milliseconds=500),
                   suppress_health_check=[HealthCheck.too_slow])
BOUNDED_IO = settings(derandomize=True, max_examples=400, deadline=timedelta(milliseconds=1000),
                      suppress_health_check=[HealthCheck.too_slow])

TOKENS = ["/", "//", ".", "..", "%2e", "%2E", "%2e%2e", ".%2E", "%2f", "%2F", "%5c", "%5C", "%00", "%0a", "%",
          "%4", "%zz", "%%", ";", ";x=1", "a", "B", "login", "cockpit", "joc", "api", ".certgate", "%41", "%6c",
          "%6C", "%25", "%252e", "%c3%a9", "%C0%AF", "%ff", "\\", "#", "?", "?x=/../", "&", "=", "~", "+", "|",
          "^", "[", "]", "{", "}", "\"", "<", "`", ":", "@", "!", "$", "'", "(", "*", ",", "%3B", "%3b", "%7e"]
VISIBLE = st.lists(st.sampled_from(TOKENS), max_size=24).map(lambda ts: ("/" + "".join(ts)).encode("latin-1"))
ANY_TARGET = st.one_of(
    VISIBLE,
    st.lists(st.sampled_from(TOKENS + ["é", "\x00", " ", "\t", "\x7f", "\u2028"]), max_size=24)
    .map(lambda ts: "".join(ts).encode("utf-8")),
    st.binary(max_size=200),
    st.binary(max_size=64).map(lambda b: b"/" + b),
)


def _segments(path: bytes) -> list[bytes]:
    return path.split(b"/")[1:]


# --------------------------------------------------------------------------- canonicaliser

@BOUNDED
@given(target=ANY_TARGET, method=st.sampled_from([b"GET", b"POST", b"OPTIONS"]))
def test_canonicaliser_properties(target: bytes, method: bytes) -> None:
    try:
        out = canonical_target(target, method)
    except TargetError as e:
        assert e.reason and "\n" not in e.reason
        return
    if out == b"*":
        assert target == b"*" and method == b"OPTIONS"
        return
    assert out.isascii() and out.startswith(b"/")
    assert canonical_target(out, method) == out  # idempotent
    path, query = split_target(out)
    assert query == split_target(target)[1]  # the query is never changed
    segs = _segments(path)
    assert all(s not in (b"", b".", b"..") for s in segs[:-1]) and segs[-1] not in (b".", b"..")
    assert b"//" not in path
    decoded = unquote_to_bytes(path)  # what an upstream that decodes once sees
    assert decoded.count(b"/") == path.count(b"/")  # no hidden separator
    dsegs = _segments(decoded)
    assert b".." not in dsegs and b"." not in dsegs  # nothing left to resolve: never above the root
    assert b"\\" not in decoded and b"\x00" not in decoded and b";" not in path
    decoded.decode("utf-8")


@BOUNDED
@given(path=st.one_of(VISIBLE.map(lambda t: t.split(b"?")[0]), st.binary(max_size=80).map(lambda b: b"/" + b)))
def test_fast_path_agrees_with_the_full_rule(path: bytes) -> None:
    try:
        full = _remove_dots(_normalise(path))
    except TargetError:
        full = None
    try:
        fast = canonical_path(path)
    except TargetError:
        fast = None
    assert fast == full


def test_worst_case_targets_at_the_largest_request_line_finish() -> None:
    """1 MiB targets (the largest configurable request line) of each costly shape are answered
    (the per-test timeout bounds them; every step of the rule is one linear pass)."""
    for unit in (b"/a", b"/%41", b"/|", b"/.", b"/a/..", b"//"):
        big = unit * ((1 << 20) // len(unit))
        try:
            canonical_target(big)
        except TargetError:
            pass


SEPARATORS = ["/"] * 12 + ["//", "/./", "/x/../", "/%2e/", "/.;/", "/x/..;/", "\\", "%2F", "/x%2F../"]
SUFFIXES = [""] * 20 + [";", ";jsessionid=1", "%3B", "%20", "%00", "."]
TAILS = [""] * 6 + ["/", "/.", "//", "/x/..", "/%2e", "%2F", "?a=b", ";", "#x"]


@st.composite
def joc_login_spellings(draw: st.DrawFn) -> str:
    """Spellings built around the JOC login path: odd separators, dot segments, escapes, case,
    ``;`` parameters, tails (weighted so most of them stay spellings of the login)."""
    out = ""
    for seg in ("joc", "api", "authentication", "login"):
        out += draw(st.sampled_from(SEPARATORS + ["/%2E%2e/" + seg + "/"]))
        out += "".join(draw(st.sampled_from([c] * 12 + [c.upper(), "%%%02X" % ord(c), "%%%02x" % ord(c)]))
                       for c in seg)
        out += draw(st.sampled_from(SUFFIXES))
    return out + draw(st.sampled_from(TAILS))


@BOUNDED
@given(spelling=joc_login_spellings())
def test_every_spelling_a_lenient_joc_takes_for_its_login_is_refused_or_claimed(spelling: str) -> None:
    """The Done-when of the path work as a property: whatever JOC's Jetty + JAX-RS (modelled
    leniently by the emulator's ``jetty_path``, case folded too) would route to its login,
    certgate either refuses or decides is its JOC door's path."""
    if jetty_path(spelling).lower() != JOC_LOGIN:
        return
    try:
        c = canonical_target(spelling.encode("latin-1"), b"POST")
    except TargetError:
        return
    assert same_login_path(split_target(c)[0].decode("ascii"), JOC_LOGIN), (spelling, c)


# --------------------------------------------------------------------------- through the HTTP layer

@BOUNDED_IO
@given(target=VISIBLE, method=st.sampled_from([b"GET", b"POST", b"DELETE"]))
def test_decision_path_is_the_forwarded_path(target: bytes, method: bytes) -> None:
    h = Harness()
    h.send(method + b" " + target + b" HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    if not h.gate.heads:
        out = h.out()
        assert out.startswith(b"HTTP/1.1 400 "), out[:80]
        assert h.pending_connects == 0 and not h.upstreams  # reached nobody
        try:
            canonical_target(target, method)
        except TargetError as e:
            assert e.reason.encode() in out
        else:
            raise AssertionError(f"llhttp refused {target!r}")  # only visible ASCII here: must be ours
        return
    (head,) = h.gate.heads
    assert head.target == canonical_target(target, method)
    assert head.path == split_target(head.target)[0].decode()
    _, t = h.connect_upstream()
    line = t.value().split(b"\r\n", 1)[0]
    assert line == method + b" " + head.target + b" HTTP/1.1"


def test_unsafe_forward_raw_target_forwards_the_raw_target_but_decides_on_the_canonical_one() -> None:
    h = Harness({"upstream": {"unsafe_forward_raw_target": True}})
    h.send(b"GET /a/./b//%7e HTTP/1.1\r\nHost: a\r\n\r\n")
    assert h.gate.heads[0].target == b"/a/b/~"
    _, t = h.connect_upstream()
    assert t.value().startswith(b"GET /a/./b//%7e HTTP/1.1\r\n")
    h2 = Harness({"upstream": {"unsafe_forward_raw_target": True}})
    h2.send(b"GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n")  # refusals stand
    assert h2.out().startswith(b"HTTP/1.1 400 ") and not h2.gate.heads and h2.pending_connects == 0


def test_refused_target_answer_says_why_and_closes() -> None:
    h = Harness()
    h.send(b"GET /joc/api/authentication/login;x HTTP/1.1\r\nHost: a\r\n\r\n")
    out = h.out()
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in out
    assert out.endswith(b"bad request: request target refused: ';' path parameters are not accepted\n")
    assert h.client.lost and not h.gate.heads and h.pending_connects == 0


# --------------------------------------------------------------------------- head parser

ALLOWED = {204} | set(range(400, 500)) | {503, 505}
METHODS = [b"GET", b"POST", b"HEAD", b"OPTIONS", b"PUT", b"CONNECT", b"PRI", b"get", b"G\x00T", b""]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/1.1 ", b"", b"http/1.1"]
HEADER_LINES = [b"Host: a", b"Host: b", b"Content-Length: 0", b"Content-Length: 3", b"Content-Length: -1",
                b"Content-Length: 1, 1", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip",
                b"Connection: close", b"Connection: upgrade", b"Upgrade: websocket", b"Upgrade: h2c",
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Expect: 100-continue", b"Expect: x",
                b"Authorization: Basic Og==", b"X: a\x00b", b"X : y", b" X: y", b"X:\x0by", b": v", b"X", b"",
                b"Cookie: __Host-certgate=x", b"X-Remote-User: root"]


def _statuses(out: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"(?:^|\r\n|\n)HTTP/1\.1 (\d{3}) ", out)]


def _feed(data: bytes, cuts: list[int]) -> Harness:
    h = Harness()
    h.gate.next = lambda head: Response(204)
    pos = 0
    for c in sorted(set(cuts)) + [len(data)]:
        if h.client.lost:
            break
        h.send(data[pos:c])
        pos = c
    return h


def _check(h: Harness) -> None:
    out = h.out()
    statuses = _statuses(out)
    assert set(statuses) <= ALLOWED, (statuses, out[:200])
    if out:
        assert out.startswith(b"HTTP/1.1 ")
    for head in h.gate.heads:
        assert canonical_target(head.target, head.method) == head.target
    assert h.pending_connects == 0  # the gate answered every request itself


@BOUNDED_IO
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=3))
def test_head_parser_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    _check(_feed(data, cuts))


@BOUNDED_IO
@given(method=st.sampled_from(METHODS), target=ANY_TARGET, version=st.sampled_from(VERSIONS),
       headers=st.lists(st.sampled_from(HEADER_LINES), max_size=6), body=st.binary(max_size=8),
       eol=st.sampled_from([b"\r\n", b"\n", b"\r"]), repeat=st.integers(1, 3),
       cuts=st.lists(st.integers(0, 300), max_size=3))
def test_head_parser_on_mutated_heads(method: bytes, target: bytes, version: bytes, headers: list[bytes],
                                      body: bytes, eol: bytes, repeat: int, cuts: list[int]) -> None:
    one = method + b" " + target + b" " + version + eol + b"".join(x + eol for x in headers) + eol + body
    _check(_feed(one * repeat, cuts))
