"""The Cockpit front door driven directly (real LoginService, SessionManager, memory store, Clock)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pyotp
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from proxy.gate import wording
from proxy.observe.audit import memory_audit
from proxy.config import ConfigError
from proxy.frontdoors.assertion import assertion_key, verify_assertion
from proxy.frontdoors.cockpit import CockpitFrontDoor
from proxy.frontdoors.cockpit_wire import normalize_root, strip_cockpit_cookies
from proxy.login.passwords import set_password
from proxy.login.service import LoginService
from proxy.login.totp import TotpSecrets
from proxy.http.messages import ConnContext, Forward, RequestHead, Response
from proxy.sessions.manager import SessionManager
from proxy.stores.memory import MemoryStore
from proxy.stores.testing import FakeTunnels, make_config, make_identity
from tests.reactor_thread import Blocking, resolve

T0 = 1_800_000_000.0
PW = "correct horse"
SECRET = pyotp.random_base32()


class Env:
    def __init__(self, tmp: Path, *, mode: str = "bearer", password: str = "file",
                 rules: Any = (("tls-cert", "password"),), totp: bool = False, url_root: str = "/",
                 max_startups: tuple[int, int, int] = (10, 100, 10)) -> None:
        login = {"required_auth_methods": [list(r) for r in rules], "password": password,
                 "totp_secrets": tmp / "totp", "totp_key": tmp / "totp.key", "max_startups": max_startups}
        if password == "file":
            login["password_file"] = tmp / "passwd"
            set_password(tmp / "passwd", "alice", PW, n=2 ** 10, r=1)
        if totp:
            TotpSecrets(tmp / "totp", tmp / "totp.key").store("alice", SECRET, T0)
        self.cfg = make_config({"login": login, "cockpit": {"mode": mode, "url_root": url_root},
                                "upstream": {"kind": "cockpit"}}, base_dir=tmp)
        self.route = self.cfg.default_route
        self.clock = Clock()
        self.clock.advance(T0)
        raw = MemoryStore()
        self.store = Blocking(raw)
        self.audit = memory_audit(now=self.clock.seconds)
        self.mgr = SessionManager(raw, self.clock, self.cfg.sessions, FakeTunnels(), self.audit)
        self.sessions = Blocking(self.mgr)
        self.raw_login = LoginService(config=self.cfg, store=raw, sessions=self.mgr, clock=self.clock,
                                      audit=self.audit)
        self.login = Blocking(self.raw_login)
        self.door = CockpitFrontDoor(config=self.cfg, login=self.raw_login, sessions=self.mgr, store=raw,
                                     clock=self.clock, audit=self.audit)
        self.key = assertion_key(self.login.secret)

    def decide(self, target: bytes = b"/cockpit/login", headers: Any = (), ident: Any = None,
               method: bytes = b"GET") -> Any:
        head = RequestHead(method=method, target=target, version=b"1.1", headers=list(headers))
        ident = ident if ident is not None else make_identity("alice", handshake_at=T0)
        assert self.door.matches(head, self.route), target
        d = self.door.decide(head, ConnContext(identity=ident, connected_at=T0), self.route)
        if isinstance(d, Deferred):
            out: list[Any] = []
            d.addBoth(out.append)
            assert out, "the decision did not fire"
            if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
                out[0].raiseException()
            return out[0]
        return d

    def secrets_in_audit(self, *texts: str) -> bool:
        blob = json.dumps(self.audit.records)
        return any(t in blob for t in texts)


def basic(user: str, pw: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Basic " + base64.b64encode(f"{user}:{pw}".encode())), (b"X-Superuser", b"none")]


def conv_answer(nonce: str, code: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"X-Conversation {nonce} {base64.b64encode(code.encode()).decode()}".encode())]


def header(resp: Any, name: bytes) -> bytes | None:
    hs = resp.set_headers if isinstance(resp, Forward) else resp.headers
    for k, v in hs:
        if k.lower() == name.lower():
            return v
    return None


def challenge_nonce(resp: Response) -> str:
    assert resp.status == 401, resp
    parts = header(resp, b"WWW-Authenticate").decode().split(" ")
    assert parts[0] == "X-Conversation" and len(parts) == 3
    assert base64.b64decode(parts[2]).decode().startswith("Authenticator code")
    assert json.loads(resp.body) == {"command": "authorize", "echo": False}
    return parts[1]


# ------------------------------------------------------------------ matching

def test_matches_login_and_open_paths_only(tmp_path) -> None:
    e = Env(tmp_path)
    m = lambda t, hs=(), method=b"GET": e.door.matches(RequestHead(method, t, b"1.1", list(hs)), e.route)  # noqa
    assert m(b"/cockpit/login") and m(b"/cockpit+app/login")
    assert m(b"/") and m(b"/cockpit/static/login.js") and m(b"/favicon.ico")
    assert not m(b"/cockpit/socket") and not m(b"/cockpit/@localhost/system/index.html")
    assert not m(b"/cockpit/static/../socket") and not m(b"/system")
    assert not m(b"/", method=b"POST")
    # with a certgate cookie the gate's session check decides (a dead session -> login page)
    assert not m(b"/", [(b"Cookie", b"__Host-certgate=" + b"a" * 43)])
    generic = make_config({"upstream": {"kind": "generic"}}).default_route
    assert not e.door.matches(RequestHead(b"GET", b"/cockpit/login", b"1.1", []), generic)


def test_url_root(tmp_path) -> None:
    assert normalize_root("cg") == "/cg/" and normalize_root("/") == "/" and normalize_root("/cg/") == "/cg/"
    e = Env(tmp_path, url_root="/cg/")
    assert e.door.is_login_path("/cg/cockpit/login") and not e.door.is_login_path("/cockpit/login")
    assert e.door.is_open_path("/cg/") and e.door.is_open_path("/cg") and not e.door.is_open_path("/")


def test_open_page_drops_cockpit_cookie_and_credentials(tmp_path) -> None:
    e = Env(tmp_path)
    f = e.decide(b"/", [(b"Cookie", b"cockpit=abc; theme=dark"), (b"Cookie", b"machine-cockpit+h=x"),
                        (b"Authorization", b"Basic Zm9vOmJhcg==")])
    assert isinstance(f, Forward) and f.on_response is None and f.session_id is None
    assert header(f, b"Cookie") == b"theme=dark" and header(f, b"Authorization") == b""
    assert strip_cockpit_cookies(RequestHead(b"GET", b"/", b"1.1", [])) is None


# ------------------------------------------------------------------ bearer, password = file

def test_bearer_login_with_password_then_session_on_200(tmp_path) -> None:
    e = Env(tmp_path)
    f = e.decide(headers=basic("alice", PW))
    assert isinstance(f, Forward)
    auth = header(f, b"Authorization")
    assert auth.startswith(b"Bearer ")
    a = verify_assertion(e.key, auth[7:].decode(), now=T0)
    assert a.account == "alice" and a.fingerprint == make_identity("alice").fingerprint
    assert f.account == "alice"
    assert len(live_sessions(e)) <= 1 and not released(f)  # nothing opened before cockpit-ws said yes
    extra = f.on_response(200, [(b"Set-Cookie", b"cockpit=x")])
    assert len(extra) == 1 and extra[0][1].startswith(b"__Host-certgate=")
    [rec] = e.store.list()
    assert rec.account == "alice" and set(rec.methods) == {"tls-cert", "password"}
    assert not e.secrets_in_audit(PW, auth.decode()[7:])


def test_bearer_cockpit_ws_refusal_opens_nothing(tmp_path) -> None:
    e = Env(tmp_path)
    f = e.decide(headers=basic("alice", PW))
    assert f.on_response(403, []) == [] and live_sessions(e) == []
    assert e.audit.records[-1]["reason"] == "upstream-refused" and e.audit.records[-1]["status"] == 403


def test_wrong_cn_refused_before_cockpit_ws(tmp_path) -> None:
    e = Env(tmp_path)
    r = e.decide(headers=basic("bob", PW))
    # 403: cockpit's login page shows the reason phrase, in the same words as certgate's own page
    assert isinstance(r, Response) and r.status == 403 and r.reason == wording.WRONG_ACCOUNT.encode()
    rec = [x for x in e.audit.records if x["decision"] == "deny"][-1]
    assert rec["reason"] == "cn-mismatch" and rec["account"] == "bob"
    assert rec["fingerprint"] == make_identity("alice").fingerprint and rec["client_ip"] == "127.0.0.1"
    # case and domain variants are not the same account
    assert e.decide(headers=basic("Alice", PW)).status == 403
    assert e.decide(headers=basic("alice@EXAMPLE", PW)).status == 403


def test_wrong_password_and_malformed_credentials(tmp_path) -> None:
    e = Env(tmp_path)
    assert e.decide(headers=basic("alice", "nope")).status == 401
    assert e.audit.records[-1]["reason"] == "bad-password"
    assert e.decide(headers=[(b"Authorization", b"Basic !!!")]).status == 401
    assert e.decide(headers=[(b"Authorization", b"Basic " + base64.b64encode(b"nocolon"))]).status == 401
    r = e.decide(headers=[(b"Authorization", b"Bearer cga1.x.y")])  # a client never brings an assertion
    assert r.status == 401 and e.audit.records[-1]["reason"] == "scheme-refused"
    r = e.decide(headers=basic("alice", PW) + [(b"Authorization", b"Basic eDp5")])
    assert r.status == 401 and e.audit.records[-1]["reason"] == "authorization-repeated"
    assert not e.secrets_in_audit("nope", PW)


def test_no_or_invalid_certificate(tmp_path) -> None:
    e = Env(tmp_path)
    r = e.decide(headers=basic("alice", PW), ident=make_identity(presented=False))
    assert r.status == 403 and b"certificate" in r.reason
    r = e.decide(headers=basic("alice", PW), ident=make_identity("alice", ok=False))
    assert r.status == 403


def test_busy_refused_like_maxstartups(tmp_path) -> None:
    e = Env(tmp_path, max_startups=(1, 100, 1))
    slot = resolve(e.login.startups.try_acquire())
    assert slot  # one login pending
    r = e.decide(headers=basic("alice", PW))
    assert r.status == 503 and e.audit.records[-1]["reason"] == "busy"
    resolve(e.login.startups.release(slot))
    assert isinstance(e.decide(headers=basic("alice", PW)), Forward)
    assert e.login.startups.pending == 0  # the slot was given back


# ------------------------------------------------------------------ TOTP through X-Conversation

def test_totp_through_x_conversation_bearer(tmp_path) -> None:
    e = Env(tmp_path, rules=[("tls-cert", "password", "totp")], totp=True)
    r = e.decide(headers=basic("alice", PW))
    nonce = challenge_nonce(r)
    code = pyotp.TOTP(SECRET).at(T0)
    f = e.decide(headers=conv_answer(nonce, code))
    assert isinstance(f, Forward) and header(f, b"Authorization").startswith(b"Bearer ")
    assert f.on_response(200, [])[0][1].startswith(b"__Host-certgate=")
    assert set(e.store.list()[0].methods) == {"tls-cert", "password", "totp"}
    # the nonce is single use
    r = e.decide(headers=conv_answer(nonce, code))
    assert r.status == 401 and r.reason == b"Invalid conversation token"
    assert not e.secrets_in_audit(code, PW)


def test_totp_wrong_code_replay_and_timeout(tmp_path) -> None:
    e = Env(tmp_path, rules=[("tls-cert", "password", "totp")], totp=True)
    nonce = challenge_nonce(e.decide(headers=basic("alice", PW)))
    assert e.decide(headers=conv_answer(nonce, "000000" if pyotp.TOTP(SECRET).at(T0) != "000000"
                                        else "111111")).status == 401
    # the step of a used code is never accepted again
    nonce = challenge_nonce(e.decide(headers=basic("alice", PW)))
    assert isinstance(e.decide(headers=conv_answer(nonce, pyotp.TOTP(SECRET).at(T0))), Forward)
    nonce = challenge_nonce(e.decide(headers=basic("alice", PW)))
    assert e.decide(headers=conv_answer(nonce, pyotp.TOTP(SECRET).at(T0))).status == 401
    assert e.audit.records[-1]["reason"] == "totp-replay"
    # response_timeout (default 60 s)
    nonce = challenge_nonce(e.decide(headers=basic("alice", PW)))
    e.clock.advance(61)
    r = e.decide(headers=conv_answer(nonce, pyotp.TOTP(SECRET).at(T0 + 61)))
    assert r.status == 401 and e.audit.records[-1]["reason"] == "conversation-unknown"
    assert len(e.door.conversations) == 0


def test_conversation_bound_to_the_certificate(tmp_path) -> None:
    e = Env(tmp_path, rules=[("tls-cert", "password", "totp")], totp=True)
    nonce = challenge_nonce(e.decide(headers=basic("alice", PW)))
    other = make_identity("alice", cert=b"another-alice-cert", handshake_at=T0)
    r = e.decide(headers=conv_answer(nonce, pyotp.TOTP(SECRET).at(T0)), ident=other)
    assert r.status == 401 and e.audit.records[-1]["reason"] == "conversation-cert-mismatch"


def test_totp_not_asked_when_not_enrolled(tmp_path) -> None:
    e = Env(tmp_path, rules=[("tls-cert", "password"), ("tls-cert", "password", "totp")], totp=False)
    assert isinstance(e.decide(headers=basic("alice", PW)), Forward)


# ------------------------------------------------------------------ basic mode (PAM checks the password)

def test_basic_mode_forwards_credentials_and_counts_upstream_password(tmp_path) -> None:
    e = Env(tmp_path, mode="basic", password="upstream")
    f = e.decide(headers=basic("alice", "pam-password"))
    assert isinstance(f, Forward)
    assert header(f, b"Authorization") == b"Basic " + base64.b64encode(b"alice:pam-password")
    assert len(live_sessions(e)) <= 1 and not released(f)
    assert f.on_response(200, [])[0][1].startswith(b"__Host-certgate=")
    assert set(e.store.list()[0].methods) == {"tls-cert", "password"}
    # PAM says no: a failure is counted (the lockout survives in the store) and audited
    f = e.decide(headers=basic("alice", "wrong"))
    assert f.on_response(401, []) == []
    assert e.audit.records[-1]["reason"] == "upstream-refused"
    assert e.store.failures("account:alice", e.clock.seconds(), 900) == 1
    assert not e.secrets_in_audit("pam-password", "wrong\"")


def test_basic_mode_wrong_cn_never_forwards_the_password(tmp_path) -> None:
    e = Env(tmp_path, mode="basic", password="upstream")
    r = e.decide(headers=basic("root", "secret"))
    assert isinstance(r, Response) and r.status == 403 and b"secret" not in r.body


def test_basic_mode_totp_keeps_password_pending_server_side(tmp_path) -> None:
    e = Env(tmp_path, mode="basic", password="upstream", rules=[("tls-cert", "password", "totp")], totp=True)
    r = e.decide(headers=basic("alice", "pam-password") + [(b"X-Superuser", b"any")])
    nonce = challenge_nonce(r)
    assert b"pam-password" not in r.body and b"pam-password" not in header(r, b"WWW-Authenticate")
    f = e.decide(headers=conv_answer(nonce, pyotp.TOTP(SECRET).at(T0)))
    assert isinstance(f, Forward)
    assert header(f, b"Authorization") == b"Basic " + base64.b64encode(b"alice:pam-password")
    assert header(f, b"X-Superuser") in (b"none", b"any")
    assert f.on_response(200, [])[0][1].startswith(b"__Host-certgate=")
    assert set(e.store.list()[0].methods) == {"tls-cert", "password", "totp"}


def test_bearer_with_upstream_password_refused_at_config_time(tmp_path) -> None:
    with pytest.raises(ConfigError, match="bearer mode cannot check passwords"):
        Env(tmp_path, mode="bearer", password="upstream")
    # without a password rule it is fine (certificate + TOTP)
    Env(tmp_path, mode="bearer", password="upstream", rules=[("tls-cert", "totp")], totp=True)


# ------------------------------------------------------------------ no credentials

def test_no_credentials_answered_locally(tmp_path) -> None:
    e = Env(tmp_path)
    r = e.decide()
    assert isinstance(r, Response) and r.status == 401


def test_no_credentials_with_live_session_gets_a_fresh_assertion(tmp_path) -> None:
    e = Env(tmp_path)
    f = e.decide(headers=basic("alice", PW))
    cookie = f.on_response(200, [])[0][1].split(b";")[0]
    f2 = e.decide(headers=[(b"Cookie", cookie)])
    assert isinstance(f2, Forward) and header(f2, b"Authorization").startswith(b"Bearer ")
    assert f2.on_response(200, []) == []  # the existing session stays, no new cookie
    assert len(e.store.list()) == 1


def test_certificate_only_rule_logs_in_without_a_form(tmp_path) -> None:
    e = Env(tmp_path, rules=[("tls-cert",)])
    f = e.decide()
    assert isinstance(f, Forward) and header(f, b"Authorization").startswith(b"Bearer ")
    assert f.on_response(200, [])[0][1].startswith(b"__Host-certgate=")


def test_relogin_ends_the_previous_session(tmp_path) -> None:
    e = Env(tmp_path)
    cookie = e.decide(headers=basic("alice", PW)).on_response(200, [])[0][1].split(b";")[0]
    f = e.decide(headers=basic("alice", PW) + [(b"Cookie", cookie)])
    f.on_response(200, [])
    ended = [r for r in e.store.list() if r.ended]
    assert len(ended) == 1 and ended[0].ended == "replaced-by-login"


# ------------------------------------------------------------------ logout through the WebSocket

def test_logout_watcher_ends_the_session(tmp_path) -> None:
    from tests.unit.test_cockpit_wsframes import masked

    e = Env(tmp_path)
    f = e.decide(headers=basic("alice", PW))
    f.on_response(200, [])
    [rec] = e.store.list()
    assert e.door.is_socket_path("/cockpit/socket") and not e.door.is_socket_path("/cockpit/login")
    w = e.door.logout_watcher(rec.id)
    w.feed(masked(b'\n{"command":"init","version":1}'))
    assert e.store.get(rec.id).ended is None
    w.feed(masked(b'\n{"command":"logout","disconnect":true}'))
    assert e.store.get(rec.id).ended == "cockpit-logout"


def test_access_rules_apply_at_the_front_door(tmp_path) -> None:
    from trust.access import AccessRule

    e = Env(tmp_path)
    object.__setattr__(e.cfg, "access_rules", [AccessRule("admins", cns=("carol",))])
    r = e.decide(headers=basic("alice", PW))
    assert r.status == 403 and e.audit.records[-1]["reason"] == "access-denied"
    assert e.audit.records[-1]["detail"]
    object.__setattr__(e.cfg, "access_rules", [AccessRule("admins", cns=("alice",))])
    assert isinstance(e.decide(headers=basic("alice", PW)), Forward)


def test_client_observer_only_for_cockpit_sockets_of_a_session(tmp_path) -> None:
    e = Env(tmp_path)
    sock = RequestHead(b"GET", b"/cockpit/socket", b"1.1", [])
    assert e.door.client_observer(sock, e.route, "sid") is not None
    assert e.door.client_observer(sock, e.route, None) is None
    assert e.door.client_observer(RequestHead(b"GET", b"/x", b"1.1", []), e.route, "sid") is None


def test_conversation_table_is_bounded_per_certificate() -> None:
    from proxy.frontdoors.conversations import PER_CERTIFICATE, Conversation, Conversations

    now = [0.0]
    table = Conversations(lambda: now[0], limit=5)
    conv = lambda n, fp: Conversation(n, "alice", fp, None, None, None, 60.0)  # noqa: E731
    for i in range(10):
        assert table.add(conv(f"a{i}", "fp-a"))
    assert len(table) == PER_CERTIFICATE and table.take("a9") is not None and table.take("a0") is None
    for i in range(3):
        assert table.add(conv(f"b{i}", f"fp-b{i}"))
    assert not table.add(conv("c", "fp-c"))  # full: refused (answered 503 busy)
    now[0] = 60.0
    assert table.add(conv("d", "fp-d")) and len(table) == 1  # expired ones purged


def test_dead_session_cookie_is_cleared_on_the_automatic_login(tmp_path) -> None:
    e = Env(tmp_path)
    cookie = e.decide(headers=basic("alice", PW)).on_response(200, [])[0][1].split(b";")[0]
    e.clock.advance(e.cfg.sessions.grace + 1)
    r = e.decide(headers=[(b"Cookie", cookie)], ident=make_identity("alice", handshake_at=T0))
    assert r.status == 401 and b"Max-Age=0" in header(r, b"Set-Cookie")


def live_sessions(e: Any) -> list[Any]:
    """Live sessions. The front door prepares the session before forwarding (the store is
    asynchronous) and releases its cookie only on the upstream's 200; after a refusal it is ended."""
    return [r for r in e.store.list() if r.ended is None]


def released(f: Any) -> bool:
    """True when the forwarded request already carries a certgate cookie (it must not, before the 200)."""
    return any(k.lower() == b"set-cookie" for k, _ in f.set_headers)


def test_pending_conversation_is_continued_by_another_process_through_the_store() -> None:
    """Worker/gateway A asks for the code; B (same store and secret, its own table) takes it once."""
    from proxy.frontdoors.conversations import NAMESPACE, Conversation, SharedConversations
    from proxy.stores.memory import MemoryEngine

    engine = MemoryEngine()
    store = MemoryStore(engine)
    now = [100.0]
    key = b"k" * 32
    a = SharedConversations(store, key, lambda: now[0], limit=5, per_certificate=3)
    b = SharedConversations(store, key, lambda: now[0], limit=5, per_certificate=3)
    conv = Conversation("n1", "alice", "fp", "rcpt", "s3cret-pw", b"root", 160.0)
    assert resolve(a.add(conv)) is True and len(a) == 1
    sealed = engine._stash[(NAMESPACE, "n1")][0]
    assert "s3cret-pw" not in sealed and "alice" not in sealed  # sealed, not just encoded
    assert resolve(b.take("n1")) == conv
    assert resolve(a.take("n1")) is None and resolve(b.take("n1")) is None  # single use across processes
    # another secret cannot open it; an expired one is gone
    resolve(a.add(Conversation("n2", "alice", "fp", None, None, None, 160.0)))
    other = SharedConversations(store, b"x" * 32, lambda: now[0], limit=5, per_certificate=3)
    assert resolve(other.take("n2")) is None
    resolve(a.add(Conversation("n3", "alice", "fp", None, None, None, 160.0)))
    now[0] = 160.0
    assert resolve(b.take("n3")) is None and len(a) == 0


# ------------------------------------------------------------------ navigations without a session

def _gate_decide(e: Env, target: bytes, headers: Any = (), ident: Any = None, upgrade: bool = False) -> Any:
    from proxy.gate.decide import Gate
    from proxy.sessions.presence import session_endpoints

    gate = Gate(config=e.cfg, sessions=e.mgr, clock=e.clock, audit=e.audit, endpoints=session_endpoints(e.mgr),
                front_doors=[e.door])
    head = RequestHead(b"GET", target, b"1.1", [(b"Host", b"gw.example")] + list(headers), upgrade=upgrade)
    return resolve(gate.decide(head, ConnContext(identity=ident or make_identity("alice", handshake_at=T0),
                                                 connected_at=T0)))


NAV = (b"Accept", b"text/html,application/xhtml+xml")


def test_navigation_without_a_session_gets_cockpits_own_login_page_at_that_path(tmp_path) -> None:
    """After Cockpit's Logout (certgate's session ended with it) or from a bookmark: cockpit-ws's
    login page at the path asked for, with nothing that authenticates; certgate's dead cookie expires."""
    e = Env(tmp_path)
    rec, cookies = e.sessions.open(make_identity("alice", handshake_at=T0), "alice", ("tls-cert", "password"),
                                   "127.0.0.1")
    token = cookies[0][1].split(b";")[0]
    e.sessions.end(rec.id, "cockpit-logout")
    d = _gate_decide(e, b"/system/terminal", [NAV, (b"Authorization", b"Basic eDp5"),
                                              (b"Cookie", b"cockpit=abc; " + token + b"; theme=dark")])
    assert isinstance(d, Forward) and d.route is e.route and d.account is None and d.session_id is None
    assert header(d, b"Authorization") == b""
    assert header(d, b"Cookie") == b"theme=dark"  # neither cockpit's nor certgate's cookie reaches cockpit-ws
    assert any(k == b"Set-Cookie" and b"Max-Age=0" in v for k, v in d.on_response(200, []))
    # no cookie at all (a bookmark in a fresh browser): the same page, no Set-Cookie
    d = _gate_decide(e, b"/system", [NAV])
    assert isinstance(d, Forward) and d.on_response is None and d.account is None


def test_other_requests_without_a_session_still_get_401(tmp_path) -> None:
    e = Env(tmp_path)
    for hs, upgrade in (([(b"Accept", b"application/json")], False),
                        ([NAV, (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")], True)):
        d = _gate_decide(e, b"/cockpit/socket", hs, upgrade=upgrade)
        assert not isinstance(d, Forward), hs  # 401 JSON, or certgate's login for a navigation


def test_navigation_with_a_live_session_is_forwarded_with_the_account(tmp_path) -> None:
    e = Env(tmp_path)
    ident = make_identity("alice", handshake_at=T0)
    rec, cookies = e.sessions.open(ident, "alice", ("tls-cert", "password"), "127.0.0.1")
    token = cookies[0][1].split(b";")[0]
    d = _gate_decide(e, b"/system", [NAV, (b"Cookie", token)], ident)
    assert isinstance(d, Forward) and d.account == "alice" and d.session_id == rec.id


def test_navigation_on_a_generic_route_still_goes_to_certgates_login(tmp_path) -> None:
    e = Env(tmp_path)
    import dataclasses

    generic = dataclasses.replace(e.route, kind="generic")
    conn = ConnContext(identity=make_identity("alice", handshake_at=T0), connected_at=T0)
    head = RequestHead(b"GET", b"/app", b"1.1", [NAV])
    assert e.door.login_page(head, conn, generic) is None
    for login in (b"/cockpit/login", b"/Cockpit/Login/"):
        assert e.door.login_page(RequestHead(b"GET", login, b"1.1", [NAV]), conn, e.route) is None


def test_access_rules_apply_to_the_login_page_at_any_path(tmp_path) -> None:
    from trust.access import AccessRule

    e = Env(tmp_path)
    object.__setattr__(e.cfg, "access_rules", [AccessRule("admins", cns=("carol",))])
    d = _gate_decide(e, b"/system", [NAV])
    assert isinstance(d, Response) and d.status == 403 and e.audit.records[-1]["reason"] == "access-denied"


def test_certificate_problems_in_the_same_words_as_certgates_pages(tmp_path) -> None:
    """Cockpit's login page shows a 403's reason phrase: the sentences of proxy.gate.wording."""
    e = Env(tmp_path)
    r = e.decide(headers=basic("alice", PW), ident=make_identity(presented=False))
    assert r.status == 403 and r.reason == wording.NO_CERTIFICATE.encode()
    bad = make_identity("alice", ok=False, reason_code="revoked", invalid_reason="revoked: serial 12 in corp.crl")
    r = e.decide(headers=basic("alice", PW), ident=bad)
    assert r.status == 403 and r.reason == wording.certificate_refused(bad).encode()
    assert b"corp.crl" not in r.reason and b"it has been revoked" in r.reason
