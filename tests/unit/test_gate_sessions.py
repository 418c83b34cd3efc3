"""Gate in session mode and certgate's session endpoints (presence, logout, trusted session, info)."""

from __future__ import annotations

import json

from twisted.internet.task import Clock

from proxy.observe.audit import memory_audit
from proxy.gate.decide import Gate
from proxy.http.messages import ConnContext, Forward, RequestHead, Response
from proxy.sessions.presence import (HtmlInjector, inject_presence_script, presence_script, session_endpoints,
                                     should_inject)
from proxy.sessions.manager import SessionManager
from proxy.stores.interface import StoreError
from proxy.stores.memory import MemoryStore
from proxy.stores.testing import FakeTunnels, make_config, make_identity
from tests.reactor_thread import Blocking, resolve
from twisted.internet.defer import fail

ALICE = b"cert-alice"
PASSWORD_RULES = {"login": {"required_auth_methods": [["tls-cert", "password"]]},
                  "listen": {"client_auth": "want"}}


class Env:
    def __init__(self, sections=None, store=None):
        self.clock = Clock()
        self.clock.advance(1000)
        self.cfg = make_config(sections or PASSWORD_RULES)
        raw = store or MemoryStore()
        self.store = Blocking(raw)
        self.tunnels = FakeTunnels()
        self.audit = memory_audit(self.clock.seconds)
        self.mgr = SessionManager(raw, self.clock, self.cfg.sessions, self.tunnels, self.audit)
        self.sessions = Blocking(self.mgr)
        self.gate = Gate(config=self.cfg, sessions=self.mgr, clock=self.clock, audit=self.audit,
                         endpoints=session_endpoints(self.mgr), front_doors=[])  # mounted as the service does

    def login(self):
        rec, cookies = self.sessions.open(make_identity("alice", cert=ALICE, handshake_at=self.clock.seconds()),
                                          "alice", ("tls-cert", "password"), "127.0.0.1")
        token = cookies[0][1].split(b";")[0].split(b"=", 1)[1]
        return rec, token

    def ident(self, cert=ALICE, hs=None, **kw):
        return make_identity("alice" if cert == ALICE else "mallory", cert=cert,
                             handshake_at=self.clock.seconds() if hs is None else hs, **kw)

    def decide(self, target=b"/", token=None, *, method=b"GET", accept=b"application/json", ident=None,
               headers=()):
        hs = [(b"Host", b"gw.example"), (b"Accept", accept)] + list(headers)
        if token is not None:
            hs.append((b"Cookie", b"__Host-certgate=" + token))
        head = RequestHead(method, target, b"1.1", hs)
        return resolve(self.gate.decide(head, ConnContext(identity=ident or self.ident(), connected_at=0.0)))


def test_session_request_is_forwarded_with_account_and_session_id():
    e = Env()
    rec, token = e.login()
    d = e.decide(b"/app", token)
    assert isinstance(d, Forward) and d.account == "alice" and d.session_id == rec.id


def test_no_session_browser_gets_302_and_api_gets_401():
    e = Env()
    d = e.decide(b"/app/page?x=1&y=2", accept=b"text/html")
    assert d.status == 302 and dict(d.headers)[b"Location"] == b"/.certgate/login?next=/app/page%3Fx%3D1%26y%3D2"
    d = e.decide(b"//evil.example/x", accept=b"text/html")
    assert dict(d.headers)[b"Location"] == b"/.certgate/login?next=/"
    d = e.decide(b"/app", method=b"POST", accept=b"text/html")  # not a navigation: 401
    assert d.status == 401 and json.loads(d.body)["login"] == "/.certgate/login"
    assert (b"WWW-Authenticate", b'Certgate realm="certgate"') in d.headers


def test_ended_session_sends_to_login_and_clears_the_cookie():
    e = Env()
    rec, token = e.login()
    e.clock.advance(300)
    d = e.decide(b"/", token, accept=b"text/html")
    assert d.status == 302
    assert any(k == b"Set-Cookie" and b"Max-Age=0" in v for k, v in d.headers)
    d = e.decide(b"/", token)
    assert d.status == 401 and json.loads(d.body)["error"] == "session-ended"


def test_other_certificate_gets_403_and_ends_the_session():
    e = Env()
    rec, token = e.login()
    d = e.decide(b"/", token, ident=e.ident(cert=b"cert-mallory"))
    assert isinstance(d, Response) and d.status == 403
    assert json.loads(d.body)["error"] == "session-cert-mismatch"
    assert e.store.get(rec.id).ended == "session-cert-mismatch"
    assert e.tunnels.closed == [(rec.id, 1008, "session-cert-mismatch")]
    assert e.decide(b"/", token).status == 401  # the owner logs in again


def test_card_pulled_requests_pass_only_inside_the_grace_window():
    e = Env()
    rec, token = e.login()
    e.clock.advance(299)
    assert isinstance(e.decide(b"/", token, ident=make_identity(presented=False)), Forward)
    e.clock.advance(1)
    assert e.decide(b"/", token, ident=make_identity(presented=False)).status == 401


def test_cert_only_mode_still_honours_a_session_without_certificate():
    e = Env({"listen": {"client_auth": "want"}})
    rec, token = e.login()
    d = e.decide(b"/", token, ident=make_identity(presented=False))
    assert isinstance(d, Forward) and d.account == "alice" and d.session_id == rec.id
    d = e.decide(b"/", ident=make_identity(presented=False))
    assert d.status == 403 and json.loads(d.body)["error"] == "certificate-required"


def test_store_failure_is_a_503_not_a_crash():
    class Broken(MemoryStore):
        def get(self, session_id):
            return fail(StoreError("redis store redis://127.0.0.1:1/0: ConnectionError: refused"))

    e = Env(store=Broken())
    d = e.decide(b"/", b"A" * 43)
    assert d.status == 503 and json.loads(d.body)["error"] == "session-store-unavailable"
    d = e.decide(b"/.certgate/api/session", b"A" * 43)
    assert d.status == 503


# --------------------------------------------------------------------------- presence

def test_presence_proves_and_reports_the_end():
    e = Env()
    rec, token = e.login()
    e.clock.advance(100)
    d = e.decide(b"/.certgate/presence", token)
    body = json.loads(d.body)
    assert d.status == 200 and not d.close
    assert body["proved_at"] == 1100 and body["ends_at"] == 1400 and body["end_reason"] == "grace-expired"
    assert body["account"] == "alice" and body["trusted"] is False
    assert body["fresh"] is True and body["now"] == 1100
    # a keep-alive connection whose handshake is older than presence_interval: not fresh, closed
    d = e.decide(b"/.certgate/presence", token, ident=e.ident(hs=1060))
    assert d.status == 200 and d.close and json.loads(d.body)["fresh"] is False
    d = e.decide(b"/.certgate/presence", token, ident=make_identity(presented=False))
    assert d.close and json.loads(d.body)["fresh"] is False
    assert e.decide(b"/.certgate/presence").status == 401
    assert e.decide(b"/.certgate/presence", token, method=b"POST").status == 405


def test_presence_401_says_why_the_session_ended():
    """The page script leaves a logged-out page to the app; it needs the end cause to tell."""
    e = Env()
    rec, token = e.login()
    e.sessions.end(rec.id, "cockpit-logout")
    d = e.decide(b"/.certgate/presence", token)
    assert d.status == 401 and json.loads(d.body)["ended"] == "cockpit-logout"
    assert "ended" not in json.loads(e.decide(b"/.certgate/presence").body)  # no session at all


def test_hidden_page_presence_is_not_activity():
    e = Env()
    rec, token = e.login()
    e.clock.advance(100)
    e.decide(b"/.certgate/presence?visible=0", token)
    r = e.store.get(rec.id)
    assert r.proved_at == 1100 and r.last_seen == 1000
    e.decide(b"/.certgate/presence?visible=1", token)
    assert e.store.get(rec.id).last_seen == 1100


def test_presence_script():
    e = Env()
    d = e.decide(b"/.certgate/presence.js", ident=make_identity(presented=False))
    assert d.status == 200 and dict(d.headers)[b"Content-Type"].startswith(b"text/javascript")
    assert b"/.certgate/presence" in d.body and b"|| 30;" in d.body
    assert b"|| 7;" in presence_script(7)


# --------------------------------------------------------------------------- logout

def test_logout_post_same_origin_ends_the_session():
    e = Env()
    rec, token = e.login()
    d = e.decide(b"/.certgate/logout", token, method=b"POST", headers=[(b"Sec-Fetch-Site", b"same-origin")],
                 accept=b"text/html")
    assert d.status == 200 and b"Logged out" in d.body
    assert any(v.endswith(b"Max-Age=0") for k, v in d.headers if k == b"Set-Cookie")
    assert e.store.get(rec.id).ended == "logout"
    assert e.tunnels.closed == [(rec.id, 1008, "logout")]


def test_logout_refuses_cross_site_posts():
    e = Env()
    rec, token = e.login()
    for hs in ([(b"Sec-Fetch-Site", b"cross-site")], [(b"Sec-Fetch-Site", b"same-site")],
               [(b"Origin", b"https://evil.example")], [(b"Origin", b"null")]):
        d = e.decide(b"/.certgate/logout", token, method=b"POST", headers=hs)
        assert d.status == 403, hs
    assert e.store.get(rec.id).ended is None
    d = e.decide(b"/.certgate/logout", token, method=b"POST", headers=[(b"Origin", b"https://gw.example")])
    assert d.status == 200 and json.loads(d.body) == {"ok": True, "logged_out": True}
    d = e.decide(b"/.certgate/logout", accept=b"text/html")
    assert d.status == 200 and b'method="post"' in d.body


# --------------------------------------------------------------------------- trusted session API

def test_trusted_session_api():
    e = Env()
    rec, token = e.login()
    e.clock.advance(100)
    d = e.decide(b"/.certgate/api/trusted-session", token, method=b"POST", ident=e.ident(hs=1000))
    assert d.status == 403 and json.loads(d.body)["error"] == "fresh-proof-required" and d.close
    d = e.decide(b"/.certgate/api/trusted-session", token, method=b"POST", ident=e.ident(hs=1095))
    body = json.loads(d.body)
    assert d.status == 200 and body["trusted"] is True and body["ends_at"] == 1100 + 1800  # idle bound (last request at 1100)
    assert body["long_until"] == 1095 + 3600
    d = e.decide(b"/.certgate/api/trusted-session", token)
    assert json.loads(d.body)["trusted"] is True
    d = e.decide(b"/.certgate/api/trusted-session", token, method=b"POST",
                 headers=[(b"Sec-Fetch-Site", b"cross-site")])
    assert d.status == 403 and json.loads(d.body)["error"] == "cross-site-request"
    d = e.decide(b"/.certgate/api/trusted-session", token, method=b"DELETE")
    assert d.status == 200 and json.loads(d.body)["trusted"] is False
    assert e.decide(b"/.certgate/api/trusted-session", method=b"POST").status == 401
    assert e.decide(b"/.certgate/api/trusted-session", token, method=b"PUT").status == 405


def test_session_info():
    e = Env()
    rec, token = e.login()
    body = json.loads(e.decide(b"/.certgate/api/session", token).body)
    assert body["fingerprint"] == rec.fingerprint and body["methods"] == ["tls-cert", "password"]
    assert "cert_der" not in body and "id" not in body
    assert e.decide(b"/.certgate/api/session").status == 401


# --------------------------------------------------------------------------- injection

def test_injection_before_head_end_even_across_chunks():
    inj = HtmlInjector(30)
    out = inj.feed(b"<html><head><title>x</title></he") + inj.feed(b"ad><body>hi</body></html>") + inj.finish()
    assert out == (b'<html><head><title>x</title><script src="/.certgate/presence.js" data-interval="30" defer>'
                   b"</script></head><body>hi</body></html>")


def test_injection_falls_back_to_body_end_or_leaves_the_page_alone():
    assert inject_presence_script(b"<p>x</p></BODY>", 10) == (
        b'<p>x</p><script src="/.certgate/presence.js" data-interval="10" defer></script></BODY>')
    assert inject_presence_script(b"plain", 10) == b"plain"
    inj = HtmlInjector(30, limit=10)
    assert inj.feed(b"0123456789AB") == b"0123456789AB"  # past the limit: unchanged, streamed
    assert inj.feed(b"</head>") == b"</head>" and inj.finish() == b""


def test_should_inject():
    assert should_inject(200, [(b"Content-Type", b"text/html; charset=utf-8")])
    assert not should_inject(200, [(b"Content-Type", b"text/html"), (b"Content-Encoding", b"gzip")])
    assert not should_inject(304, [(b"Content-Type", b"text/html")])
    assert not should_inject(200, [(b"Content-Type", b"application/json")])


def test_session_cookie_never_reaches_the_upstream():
    e = Env()
    rec, token = e.login()
    d = e.decide(b"/", token, headers=[(b"Cookie", b"theme=dark; __Host-certgate=x; lang=en")])
    # the session cookie appears twice in this request: treated as absent
    assert d.status == 401
    d = e.decide(b"/", None, headers=[(b"Cookie", b"theme=dark; __Host-certgate=" + token + b"; lang=en"),
                                      (b"Cookie", b"cockpit=abc")])
    assert isinstance(d, Forward) and d.set_headers == [(b"Cookie", b"theme=dark; lang=en; cockpit=abc")]
    d = e.decide(b"/", token)
    assert isinstance(d, Forward) and d.set_headers == [(b"Cookie", b"")]
    # cert-only mode too
    e2 = Env({"listen": {"client_auth": "want"}})
    d = e2.decide(b"/", b"A" * 43, headers=[(b"Cookie", b"a=1")])
    assert isinstance(d, Forward) and d.set_headers == [(b"Cookie", b"a=1")]
    assert e2.decide(b"/", None, headers=[(b"Cookie", b"a=1")]).set_headers == []


def test_cert_only_request_with_another_certificates_cookie_is_refused_and_ends_it():
    e = Env({"listen": {"client_auth": "want"}})  # certificate-only for everyone
    rec, token = e.login()
    d = e.decide(b"/", token, ident=e.ident(cert=b"cert-mallory"))
    assert isinstance(d, Response) and d.status == 403
    assert json.loads(d.body)["error"] == "session-cert-mismatch"
    assert e.store.get(rec.id).ended == "session-cert-mismatch"
    # the owner's own cookie beside her certificate: forwarded, and the proof moves
    rec2, token2 = e.login()
    e.clock.advance(50)
    d = e.decide(b"/", token2)
    assert isinstance(d, Forward) and d.account == "alice" and e.store.get(rec2.id).proved_at == 1050
