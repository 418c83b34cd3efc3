"""Every spelling of the JOC and Cockpit login paths, per class, is checked by its front door or
refused: the real Gate with the real doors (unit harness), and the real HTTP layer for refusals.

The black-box twin (tests/blackbox/test_path_spellings_gateway.py) runs the same spellings
through the real gateway against the JOC emulator and a real cockpit-ws.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from proxy.gate.decide import Gate
from proxy.http.messages import ConnContext, Forward, RequestHead, Response
from proxy.sessions.presence import session_endpoints
from tests.harness.fakes import make_identity
from tests.harness.joc import jetty_path
from tests.harness.path_spellings import CLASSES, COCKPIT_LOGIN, COCKPIT_SPELLINGS, JOC_LOGIN, JOC_SPELLINGS, canonical, \
    expected
from tests.unit import test_cockpit_frontdoor as cockpit_env
from tests.unit import test_joc_frontdoor as joc_env
from tests.harness.engine import Harness


def _resolve(d: Any) -> Any:
    if isinstance(d, Deferred):
        out: list[Any] = []
        d.addBoth(out.append)
        assert out, "the decision did not fire"
        if hasattr(out[0], "raiseException"):
            out[0].raiseException()
        return out[0]
    return d


def _basic(cred: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Basic " + base64.b64encode(cred.encode())), (b"Content-Type", b"application/json"),
            (b"Host", b"gw.example"), (b"Accept", b"application/json")]


class Site:
    """The real Gate in front of one front door (JOC or Cockpit); alice's certificate and a live
    session of hers, so a request the door does not claim WOULD be forwarded (the bypass)."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.gate = Gate(config=env.cfg, sessions=env.mgr, clock=env.clock, audit=env.audit,
                         endpoints=session_endpoints(env.mgr), front_doors=[env.door])
        self.ident = make_identity("alice", handshake_at=joc_env.T0)
        _, cookies = env.sessions.open(self.ident, "alice", ("tls-cert", "password"), "127.0.0.1")
        self.cookie = cookies[0][1].split(b";")[0]

    def decide(self, target: str, method: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
        head = RequestHead(method, target.encode("ascii"), b"1.1", headers + [(b"Cookie", self.cookie)],
                           has_body=method == b"POST")
        return _resolve(self.gate.decide(head, ConnContext(identity=self.ident, connected_at=joc_env.T0)))


def _refused_by_the_http_layer(spelling: str, method: bytes) -> None:
    h = Harness()
    h.send(method + b" " + spelling.encode("latin-1") + b" HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}")
    out = h.out()
    assert out.startswith(b"HTTP/1.1 400 ") and b"request target refused" in out, (spelling, out[:120])
    assert not h.gate.heads and h.pending_connects == 0 and not h.upstreams, spelling  # reached nobody


@pytest.mark.parametrize("cls", CLASSES)
def test_joc_login_spellings(cls: str, tmp_path: Path) -> None:
    seen = set()
    for i, spelling in enumerate(JOC_SPELLINGS[cls]):
        # a lenient JOC would route it to its login (a NUL: where a C string ends)
        assert jetty_path(spelling).split("\x00")[0].lower().rstrip("/") == JOC_LOGIN, spelling
        outcome = expected(spelling, JOC_LOGIN)
        seen.add(outcome)
        if outcome == "refused":
            _refused_by_the_http_layer(spelling, b"POST")
            continue
        target = canonical(spelling)
        assert target is not None
        (tmp_path / str(i)).mkdir()
        site = Site(joc_env.Env(tmp_path / str(i)))  # password checked by JOC, CN == account by certgate
        # alice's certificate with bob's (valid) credentials: the door refuses, JOC is never asked
        before = len(site.env.audit.records)
        d = site.decide(target, b"POST", _basic("bob:bob-pw"))
        assert isinstance(d, Response), (spelling, d)
        assert d.status == (401 if target == JOC_LOGIN else 404), (spelling, d.status)
        assert any(r["decision"] == "deny" for r in site.env.audit.records[before:]), spelling
        if target == JOC_LOGIN:  # the door's own checks pass for alice: forwarded as the canonical target
            f = site.decide(target, b"POST", _basic("alice:pw"))
            assert isinstance(f, Forward) and f.account == "alice", spelling
    assert seen, cls


@pytest.mark.parametrize("cls", CLASSES)
def test_cockpit_login_spellings(cls: str, tmp_path: Path) -> None:
    for i, spelling in enumerate(COCKPIT_SPELLINGS[cls]):
        outcome = expected(spelling, COCKPIT_LOGIN)
        if outcome == "refused":
            _refused_by_the_http_layer(spelling, b"GET")
            continue
        target = canonical(spelling)
        assert target is not None
        (tmp_path / str(i)).mkdir()
        site = Site(cockpit_env.Env(tmp_path / str(i)))  # bearer mode, certgate checks the password
        before = len(site.env.audit.records)
        d = site.decide(target, b"GET", _basic(f"bob:{cockpit_env.PW}"))
        assert isinstance(d, Response), (spelling, d)
        # CN != account: the Cockpit door answers 403 with plain words login.js shows
        assert d.status == (403 if target == COCKPIT_LOGIN else 404), (spelling, d.status)
        assert any(r["decision"] == "deny" for r in site.env.audit.records[before:]), spelling
        if target == COCKPIT_LOGIN:
            f = site.decide(target, b"GET", _basic(f"alice:{cockpit_env.PW}"))
            assert isinstance(f, Forward) and f.account == "alice", spelling


def test_every_class_has_both_outcomes_somewhere() -> None:
    """The lists are not trivially one-sided: refused and door-checked spellings both occur."""
    for spellings, login in ((JOC_SPELLINGS, JOC_LOGIN), (COCKPIT_SPELLINGS, COCKPIT_LOGIN)):
        outcomes = {expected(s, login) for ss in spellings.values() for s in ss}
        assert outcomes == {"refused", "door"}
        assert all(expected(s, login) == "refused" for s in spellings["path parameters"])
        assert all(expected(s, login) == "door" for s in spellings["case"])


def test_not_a_login_spelling_is_not_claimed_and_the_session_forwards_it(tmp_path: Path) -> None:
    site = Site(joc_env.Env(tmp_path))
    for p in ("/joc/api/authentication/logins", "/joc/api/authentication/login/x", "/joc/api/authentication"):
        assert not site.env.door.matches(RequestHead(b"POST", p.encode(), b"1.1", []), site.env.route), p
        d = site.decide(p, b"POST", _basic("bob:bob-pw"))
        assert isinstance(d, Forward) and d.account == "alice", p  # what a missed spelling would get


def test_routes_and_certgate_endpoints_decide_on_the_canonical_path() -> None:
    from twisted.internet.task import Clock

    from proxy.observe.audit import memory_audit
    from proxy.paths import canonical_target
    from tests.harness.config import engine_config as http_config

    cfg = http_config("http://cockpit.test:9090", {"listen": {"client_auth": "none"}},
                      routes=[{"name": "joc", "prefix": "/joc/", "url": "http://joc.test:4446", "kind": "joc"}])
    hits: list[str] = []

    def ping(head: RequestHead, conn: ConnContext) -> Response:
        hits.append(head.path)
        return Response(204)

    gate = Gate(config=cfg, sessions=None, clock=Clock(), audit=memory_audit(), endpoints={"/.certgate/ping": ping},
                front_doors=[])
    conn = ConnContext(identity=make_identity(presented=False), connected_at=0.0)

    def decide(spelling: str) -> Any:
        target = canonical_target(spelling.encode())
        return gate.decide(RequestHead(b"GET", target, b"1.1", [(b"Accept", b"application/json")]), conn)

    for spelling, route in (("/cockpit/../joc/api/x", "joc"), ("/joc/../cockpit/x", "default"), ("/%6Aoc/api", "joc"),
                            ("//joc//api", "joc"), ("/joc/./", "joc"), ("/x/%2e%2e/joc/a", "joc"),
                            ("/JOC/api", "default")):
        d = decide(spelling)
        assert isinstance(d, Forward) and getattr(d.route, "name") == route, spelling
    for spelling in ("/x/../.certgate/ping", "/.certgate/./ping", "/.certgate//ping", "/%2Ecertgate/%70ing"):
        d = decide(spelling)
        assert isinstance(d, Response) and d.status == 204, spelling
    assert hits == ["/.certgate/ping"] * 4
    for spelling in ("/.certgate/ping/", "/.certgate/x/../pong"):
        d = decide(spelling)
        assert isinstance(d, Response) and d.status == 404, spelling


def test_admin_api_decides_on_the_canonical_path() -> None:
    from tests.unit.test_admin_api import TOKEN
    from tests.unit.test_admin_api import Env as AdminEnv

    e = AdminEnv(token=TOKEN)
    assert e.call(b"GET", b"/sessions/../health")[0] == 200  # /health needs no token
    assert e.call(b"GET", b"/health/../sessions")[0] == 401  # /sessions does
    assert e.call(b"GET", b"/%73essions", b"Bearer " + TOKEN.encode())[0] == 200
    status, body = e.call(b"GET", b"/x%2F..%2Fhealth")
    assert status == 400 and body["message"] == "request target refused: encoded '/' (%2F) in the path"
    assert e.call(b"GET", b"/a;b")[0] == 400
