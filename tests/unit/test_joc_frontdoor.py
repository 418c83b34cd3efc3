"""The JOC front door driven directly (real LoginService, SessionManager, memory store, Clock)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pyotp
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from proxy.observe.audit import memory_audit
from proxy.frontdoors.joc import JocFrontDoor, decode_joc_basic
from proxy.login.passwords import set_password
from proxy.login.service import LoginService
from proxy.login.totp import TotpSecrets
from proxy.http.messages import ConnContext, Forward, RequestHead, Response
from proxy.sessions.manager import SessionManager
from proxy.stores.memory import MemoryStore
from proxy.stores.testing import FakeTunnels, make_config, make_identity
from tests.reactor_thread import Blocking, resolve

T0 = 1_800_000_000.0
SECRET = pyotp.random_base32()
LOGIN = b"/joc/api/authentication/login"


class Env:
    def __init__(self, tmp: Path, *, password: str = "upstream", rules: Any = (("tls-cert", "password"),),
                 totp: bool = False, strip_domain: bool = False) -> None:
        login = {"required_auth_methods": [list(r) for r in rules], "password": password,
                 "totp_secrets": tmp / "totp", "totp_key": tmp / "totp.key"}
        if password == "file":
            login["password_file"] = tmp / "passwd"
            set_password(tmp / "passwd", "alice", "pw", n=2 ** 10, r=1)
        if totp:
            TotpSecrets(tmp / "totp", tmp / "totp.key").store("alice", SECRET, T0)
        self.cfg = make_config({"login": login, "upstream": {"kind": "joc"}}, base_dir=tmp)
        if strip_domain:
            from trust.settings import MappingSettings

            object.__setattr__(self.cfg, "trust", type("T", (), {"mapping": MappingSettings(strip_domain=True)})())
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
        self.door = JocFrontDoor(config=self.cfg, login=self.raw_login, sessions=self.mgr, clock=self.clock,
                                 audit=self.audit)

    def decide(self, headers: Any = (), ident: Any = None, method: bytes = b"POST") -> Any:
        head = RequestHead(method=method, target=LOGIN, version=b"1.1", headers=list(headers), has_body=True)
        ident = ident if ident is not None else make_identity("alice", handshake_at=T0)
        assert self.door.matches(head, self.route)
        d = self.door.decide(head, ConnContext(identity=ident, connected_at=T0), self.route)
        if isinstance(d, Deferred):
            out: list[Any] = []
            d.addBoth(out.append)
            if hasattr(out[0], "raiseException"):
                out[0].raiseException()
            return out[0]
        return d


def basic(cred: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Basic " + base64.b64encode(cred.encode())), (b"Content-Type", b"application/json")]


def sent_auth(f: Forward) -> str:
    v = dict((k.lower(), v) for k, v in f.set_headers)[b"authorization"]
    return base64.b64decode(v[6:]).decode()


def test_decode_like_joc() -> None:
    assert decode_joc_basic(b"Basic " + base64.b64encode(b"alice:pw:x")) == ("alice", "pw:x")
    assert decode_joc_basic(b"Basic " + base64.b64encode(b"alice")) == ("alice", None)
    assert decode_joc_basic(b"Basic Og==") == ("", "")
    assert decode_joc_basic(b"Basic !!") is None


def test_matches_only_the_login_path_of_joc_routes(tmp_path) -> None:
    e = Env(tmp_path)
    h = lambda t: RequestHead(b"POST", t, b"1.1", [])  # noqa: E731
    assert e.door.matches(h(LOGIN), e.route)
    assert not e.door.matches(h(b"/joc/api/authentication/logout"), e.route)
    assert not e.door.matches(h(LOGIN), make_config({"upstream": {"kind": "cockpit"}}).default_route)


def test_right_cn_forwards_and_opens_session_on_joc_200(tmp_path) -> None:
    e = Env(tmp_path)
    f = e.decide(basic("alice:joc-pw"))
    assert isinstance(f, Forward) and sent_auth(f) == "alice:joc-pw" and f.account == "alice"
    assert len(live_sessions(e)) <= 1 and not released(f)
    extra = f.on_response(200, [(b"X-Access-Token", b"t")])
    assert extra[0][0] == b"Set-Cookie" and extra[0][1].startswith(b"__Host-certgate=")
    assert all(k != b"X-Access-Token" for k, _ in extra)  # JOC's token is JOC's, passed through untouched
    [rec] = e.store.list()
    assert set(rec.methods) == {"tls-cert", "password"}
    assert "joc-pw" not in json.dumps(e.audit.records)


def test_wrong_cn_refused_before_joc(tmp_path) -> None:
    e = Env(tmp_path)
    r = e.decide(basic("bob:pw"))
    assert isinstance(r, Response) and r.status == 401
    assert json.loads(r.body)["message"] == "Access denied" and json.loads(r.body)["isAuthenticated"] is False
    assert e.audit.records[-1]["reason"] == "cn-mismatch"
    assert e.decide(basic("ALICE:pw")).status == 401


def test_empty_account_means_the_certificate_account(tmp_path) -> None:
    e = Env(tmp_path)
    f = e.decide(basic(":joc-pw"))
    assert isinstance(f, Forward) and sent_auth(f) == "alice:joc-pw"
    f = e.decide([(b"Authorization", b"Basic Og==")])
    assert isinstance(f, Forward) and sent_auth(f) == "alice:"
    r = e.decide([(b"Authorization", b"Basic Og==")], ident=make_identity(presented=False))
    assert r.status == 401


def test_domain_stripping_when_configured(tmp_path) -> None:
    e = Env(tmp_path, strip_domain=True)
    f = e.decide(basic("alice@EXAMPLE:pw"))
    assert isinstance(f, Forward) and sent_auth(f) == "alice@EXAMPLE:pw"  # JOC gets what was typed
    (tmp_path / "x").mkdir()
    assert Env(tmp_path / "x", strip_domain=False).decide(basic("alice@EXAMPLE:pw")).status == 401


def test_missing_and_malformed_authorization(tmp_path) -> None:
    e = Env(tmp_path)
    r = e.decide([])
    assert r.status == 420 and json.loads(r.body)["error"]["code"] == "JOC-420"
    assert e.decide([(b"Authorization", b"Basic @@@")]).status == 420
    assert e.decide([(b"Authorization", b"Bearer abc")]).status == 420
    assert e.decide(basic("alice:pw"), method=b"GET").status == 405


def test_joc_401_counts_as_failed_password(tmp_path) -> None:
    e = Env(tmp_path)
    f = e.decide(basic("alice:wrong"))
    assert f.on_response(401, []) == [] and live_sessions(e) == []
    assert e.store.failures("account:alice", T0, 900) == 1
    assert e.audit.records[-1]["reason"] == "upstream-refused"


def test_totp_header_when_required(tmp_path) -> None:
    e = Env(tmp_path, rules=[("tls-cert", "password", "totp")], totp=True)
    r = e.decide(basic("alice:pw"))
    assert r.status == 401 and b"X-Certgate-TOTP" in dict(r.headers)[b"WWW-Authenticate"]
    code = pyotp.TOTP(SECRET).at(T0)
    f = e.decide(basic("alice:pw") + [(b"X-Certgate-TOTP", code.encode())])
    assert isinstance(f, Forward)
    assert dict(f.set_headers)[b"X-Certgate-TOTP"] == b""  # the code never reaches JOC
    f.on_response(200, [])
    assert set(e.store.list()[0].methods) == {"tls-cert", "password", "totp"}
    # replayed code refused
    assert e.decide(basic("alice:pw") + [(b"X-Certgate-TOTP", code.encode())]).status == 401
    assert code not in json.dumps(e.audit.records)


def test_password_file_mode_checks_before_joc(tmp_path) -> None:
    e = Env(tmp_path, password="file")
    assert e.decide(basic("alice:nope")).status == 401
    f = e.decide(basic("alice:pw"))
    assert isinstance(f, Forward)
    assert f.on_response(200, [])[0][1].startswith(b"__Host-certgate=")


def test_access_rules_apply_at_the_front_door(tmp_path) -> None:
    import ipaddress

    from trust.access import AccessRule

    e = Env(tmp_path)
    object.__setattr__(e.cfg, "access_rules", [AccessRule("office", ip_ranges=(ipaddress.ip_network("10.0.0.0/8"),))])
    r = e.decide(basic("alice:pw"))
    assert r.status == 403 and e.audit.records[-1]["reason"] == "access-denied"


def test_live_totp_session_stands_in_for_the_code(tmp_path) -> None:
    e = Env(tmp_path, rules=[("tls-cert", "password", "totp")], totp=True)
    ident = make_identity("alice", handshake_at=T0)
    rec, cookies = e.sessions.open(ident, "alice", ["tls-cert", "password", "totp"], "127.0.0.1")
    cookie = cookies[0][1].split(b";")[0]
    f = e.decide(basic("alice:pw") + [(b"Cookie", cookie)])
    assert isinstance(f, Forward) and f.on_response(200, []) == []  # the session stays as it is
    assert e.audit.records[-1]["reason"] == "session-totp"
    # a session without TOTP does not
    (tmp_path / "b").mkdir()
    e2 = Env(tmp_path / "b", rules=[("tls-cert", "password", "totp")], totp=True)
    _, c2 = e2.sessions.open(ident, "alice", ["tls-cert", "password"], "127.0.0.1")
    assert e2.decide(basic("alice:pw") + [(b"Cookie", c2[0][1].split(b";")[0])]).status == 401
    # nor another certificate's session
    other = make_identity("alice", cert=b"other-alice", handshake_at=T0)
    assert e.decide(basic("alice:pw") + [(b"Cookie", cookie)], ident=other).status == 401


def live_sessions(e: Any) -> list[Any]:
    """Live sessions. The front door prepares the session before forwarding (the store is
    asynchronous) and releases its cookie only on the upstream's 200; after a refusal it is ended."""
    return [r for r in e.store.list() if r.ended is None]


def released(f: Any) -> bool:
    """True when the forwarded request already carries a certgate cookie (it must not, before the 200)."""
    return any(k.lower() == b"set-cookie" for k, _ in f.set_headers)


def test_a_live_session_of_the_same_certificate_and_account_is_kept(tmp_path) -> None:
    """Logged in on certgate's page first, then in JOC's GUI: no second session is opened."""
    e = Env(tmp_path, password="file")
    ident = make_identity("alice", handshake_at=T0)
    rec, cookies = e.sessions.open(ident, "alice", ["password", "tls-cert"], ident.client_ip)
    cookie = cookies[0][1].split(b";", 1)[0]
    f = e.decide(basic("alice:pw") + [(b"Cookie", cookie)], ident=ident)
    assert isinstance(f, Forward) and f.on_response(200, []) == []
    assert [r.id for r in e.store.list()] == [rec.id]
    # without the cookie (or with another account's session) a session is opened as before
    f = e.decide(basic("alice:pw"), ident=ident)
    assert any(k == b"Set-Cookie" for k, _ in f.on_response(200, []))
    assert len(e.store.list()) == 2


def _head(method: bytes, target: bytes, headers: Any = ()) -> RequestHead:
    return RequestHead(method=method, target=target, version=b"1.1", headers=list(headers), has_body=False)


def test_joc_gui_loads_before_login_without_any_credential(tmp_path) -> None:
    """JOC's login page (GUI files, pre-login API) needs no certgate session; nothing that could
    authenticate reaches JOC that way, and the page gets the presence script in waiting mode."""
    e = Env(tmp_path)
    conn = ConnContext(identity=make_identity("alice", handshake_at=T0), connected_at=T0)
    for method, target in ((b"GET", b"/joc/"), (b"GET", b"/joc/main.3f2a.js?v=1"), (b"HEAD", b"/joc/assets/x.svg"),
                           (b"POST", b"/joc/api/configuration/login"), (b"POST", b"/joc/api/iam/identityproviders")):
        head = _head(method, target, [(b"Authorization", b"Basic YWxpY2U6cHc="), (b"X-Access-Token", b"t"),
                                      (b"Cookie", b"__Host-certgate=stale; lang=en")])
        assert e.door.matches(head, e.route), target
        f = e.door.decide(head, conn, e.route)
        assert isinstance(f, Forward) and f.account is None and f.session_id is None, target
        sets = dict(f.set_headers)
        assert sets[b"Authorization"] == b"" and sets[b"X-Access-Token"] == b"" and sets[b"Cookie"] == b"lang=en"
        assert f.presence_await == (method == b"GET")
    # not open: the API, other methods, escapes and dot segments (JOC's Jetty would resolve them)
    for method, target in ((b"POST", b"/joc/api/events"), (b"GET", b"/joc/api/events"), (b"POST", b"/joc/"),
                           (b"GET", b"/joc/%61pi/events"), (b"GET", b"/joc/x/../api/events"),
                           (b"GET", b"/joc//api/events"), (b"GET", b"/joc/./api/events"),
                           (b"POST", b"/joc/api/configuration/login/../../api/events"), (b"GET", b"/other/")):
        assert not e.door.matches(_head(method, target), e.route), target


def test_with_a_live_session_the_gui_goes_through_the_gate(tmp_path) -> None:
    e = Env(tmp_path)
    ident = make_identity("alice", handshake_at=T0)
    _, cookies = e.sessions.open(ident, "alice", ["password", "tls-cert"], ident.client_ip)
    cookie = cookies[0][1].split(b";", 1)[0]
    assert not e.door.matches(_head(b"GET", b"/joc/", [(b"Cookie", cookie)]), e.route)
    assert e.door.matches(_head(b"GET", b"/joc/", [(b"Cookie", b"__Host-certgate=unknown")]), e.route)
