"""The enrolment page /.certgate/webauthn and the Cockpit door's hand-off to certgate's page,
driven directly (real LoginService, SessionManager, memory store, Clock; a software key)."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from twisted.internet.defer import Deferred

from proxy.frontdoors.cockpit import USE_KEY, CockpitFrontDoor
from proxy.login.pages import LoginPage
from proxy.login.testing import head, make_rig
from proxy.login.web import PRE_COOKIE
from proxy.login.webauthn_creds import CredentialFile
from proxy.login.webauthn_js import SCRIPT_SRC
from proxy.login.webauthn_page import WEBAUTHN_PATH, EnrolPage
from proxy.http.messages import ConnContext, Local, Response
from proxy.stores.testing import make_config
from tests.unit.webauthn_soft import SoftKey

ORIGIN = "https://console.example.org"
RULES = [["tls-cert", "password", "webauthn"], ["tls-cert", "password"]]
SAME = [(b"Sec-Fetch-Site", b"same-origin"), (b"Host", b"console.example.org")]


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path, {"required_auth_methods": RULES},
                 webauthn={"rp_id": "console.example.org", "origin": ORIGIN, "credentials": tmp_path / "wa.json"})
    r.set_password("alice", "pw")
    return r


def run(result: Any) -> Response:
    if isinstance(result, Deferred):
        out: list[Any] = []
        result.addBoth(out.append)
        assert out, "the answer did not fire"
        return out[0]
    return result


def cookie_of(set_cookie: list[tuple[bytes, bytes]]) -> str:
    return set_cookie[0][1].split(b";", 1)[0].decode()


class Browser:
    """A session cookie, the pre-auth cookie and the page's CSRF token, as a browser keeps them."""

    def __init__(self, rig) -> None:
        self.rig = rig
        o = run(rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="pw"))
        assert o.ok
        self.cookies = [cookie_of(o.set_cookie)]
        self.page = EnrolPage(rig.login)

    def _head(self, method: bytes, extra=()) -> Any:
        return head(method, WEBAUTHN_PATH.encode(), [(b"Cookie", "; ".join(self.cookies).encode())] + list(extra))

    def get(self, conn: ConnContext | None = None) -> Response:
        r = run(self.page(self._head(b"GET"), conn or self.rig.conn("alice")))
        for k, v in r.headers:
            if k == b"Set-Cookie" and v.startswith(PRE_COOKIE.encode()):
                self.cookies.append(v.split(b";", 1)[0].decode())
        return r

    def post(self, fields: dict[str, str], conn: ConnContext | None = None, extra=SAME) -> Response:
        conn = conn or self.rig.conn("alice")
        h = self._head(b"POST", [(b"Content-Type", b"application/x-www-form-urlencoded"), *extra])
        d = run(self.page(h, conn))
        if not isinstance(d, Local):
            return d
        return run(d.handler(h, urlencode(fields).encode(), conn))


def form_of(r: Response) -> tuple[dict[str, Any], str]:
    text = r.body.decode()
    opts = json.loads(re.search(r'id="webauthn-options" data-mode="create">(.*?)</script>', text).group(1))
    csrf = html.unescape(re.search(r'name="csrf" value="([^"]+)"', text).group(1))
    return opts, csrf


def test_without_a_session_the_page_sends_to_the_login(rig):
    r = run(EnrolPage(rig.login)(head(b"GET", WEBAUTHN_PATH.encode()), rig.conn("alice")))
    assert r.status == 303 and dict(r.headers)[b"Location"] == b"/.certgate/login?next=/.certgate/webauthn"


def test_add_a_key_with_password_and_fresh_proof(rig):
    b = Browser(rig)
    r = b.get()
    assert r.status == 200 and SCRIPT_SRC.encode() in dict(r.headers)[b"Content-Security-Policy"]
    opts, csrf = form_of(r)
    key = SoftKey("console.example.org")
    r = b.post({"csrf": csrf, "name": "desk <key>", "password": "pw", "webauthn": key.register(opts, ORIGIN)})
    assert r.status == 200, r.body
    assert b"desk &lt;key&gt;" in r.body and b"desk <key>" not in r.body
    [c] = CredentialFile(rig.folder / "wa.json").credentials("alice")
    assert c.name == "desk <key>"
    assert rig.audit.records[-1]["event"] == "webauthn" and rig.audit.records[-1]["decision"] == "add"


def test_refusals(rig):
    b = Browser(rig)
    opts, csrf = form_of(b.get())
    key = SoftKey("console.example.org")
    resp = key.register(opts, ORIGIN)
    # wrong password
    r = b.post({"csrf": csrf, "name": "k", "password": "nope", "webauthn": resp})
    assert r.status == 401 and rig.audit.records[-1]["reason"] == "bad-password"
    # no CSRF token
    r = b.post({"name": "k", "password": "pw", "webauthn": resp})
    assert r.status == 403 and rig.audit.records[-1]["reason"] == "csrf-token"
    # cross-site
    r = b.post({"csrf": csrf, "name": "k", "password": "pw", "webauthn": resp},
               extra=[(b"Sec-Fetch-Site", b"cross-site")])
    assert r.status == 403 and rig.audit.records[-1]["reason"] == "cross-site"
    # a stale proof: the connection's handshake is older than the fresh window (session still alive)
    rig.clock.advance(rig.sessions.fresh_window() + 1)
    old = dataclasses.replace(rig.conn("alice").identity,
                              handshake_at=rig.clock.seconds() - rig.sessions.fresh_window() - 1)
    stale = ConnContext(identity=old, connected_at=old.handshake_at)
    r = b.post({"csrf": csrf, "name": "k", "password": "pw", "webauthn": resp}, conn=stale)
    assert r.status == 403 and r.close and b"fresh proof" in r.body
    assert CredentialFile(rig.folder / "wa.json").credentials("alice") == []


def test_login_page_offers_the_key_only_with_one(rig):
    page = LoginPage(rig.login)
    r = page.render(head(b"GET", b"/.certgate/login"), rig.conn("alice"))
    assert b"webauthn-go" not in r.body and b"script-src" not in dict(r.headers)[b"Content-Security-Policy"]
    b = Browser(rig)
    opts, csrf = form_of(b.get())
    assert b.post({"csrf": csrf, "name": "k", "password": "pw",
                   "webauthn": SoftKey("console.example.org").register(opts, ORIGIN)}).status == 200
    o = run(rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="pw"))
    r = page.render(head(b"GET", b"/.certgate/login"), rig.conn("alice"), outcome=o, account="alice")
    assert b'id="webauthn-go"' in r.body and SCRIPT_SRC.encode() in dict(r.headers)[b"Content-Security-Policy"]
    assert b'name="webauthn"' in r.body and b'name="receipt"' in r.body


def test_cockpit_door_sends_key_accounts_to_certgates_page(rig):
    cfg = make_config({"upstream": {"kind": "cockpit"}})
    door = CockpitFrontDoor(config=cfg, login=rig.login, sessions=rig.sessions, store=rig.store, clock=rig.clock,
                            audit=rig.audit)
    route = cfg.default_route
    nav = head(b"GET", b"/", [(b"Accept", b"text/html")])
    assert door.matches(nav, route)
    # no key yet: Cockpit's own page
    assert not isinstance(run(door.decide(nav, rig.conn("alice"), route)), Response)
    b = Browser(rig)
    opts, csrf = form_of(b.get())
    b.post({"csrf": csrf, "name": "k", "password": "pw",
            "webauthn": SoftKey("console.example.org").register(opts, ORIGIN)})
    r = run(door.decide(nav, rig.conn("alice"), route))
    assert isinstance(r, Response) and r.status == 303 and dict(r.headers)[b"Location"] == b"/.certgate/login?next=/"
    # static files of the login page still load; Cockpit's form with a password is refused with the words
    assert not isinstance(run(door.decide(head(b"GET", b"/cockpit/static/login.js"), rig.conn("alice"), route)),
                          Response)
    login = head(b"GET", b"/cockpit/login", [(b"Authorization", b"Basic " + base64.b64encode(b"alice:pw"))])
    r = run(door.decide(login, rig.conn("alice"), route))
    assert r.status == 403 and r.reason == USE_KEY.encode()
    assert rig.audit.records[-1]["reason"] == "webauthn-on-certgate-page"


def test_file_writes_off_the_calling_thread_and_their_failures(rig):
    """With a thread runner, adding a key and a login's counter update go through it; a file that
    cannot be written is a refusal (enrolment) or an audited error (counter), never a traceback."""
    from twisted.internet.defer import maybeDeferred

    ran: list[str] = []

    def runner(f: Any, *a: Any) -> Deferred:
        ran.append(getattr(f, "__name__", "?"))
        return maybeDeferred(f, *a)

    rig.login.webauthn._defer_to_thread = runner
    b = Browser(rig)
    opts, csrf = form_of(b.get())
    key = SoftKey("console.example.org")
    r = b.post({"csrf": csrf, "name": "k", "password": "pw", "webauthn": key.register(opts, ORIGIN)})
    assert r.status == 200 and b"added" in r.body and "add" in ran
    o = run(rig.login.authenticate(account="alice", conn=rig.conn("alice"), password="pw"))
    lock = rig.folder / "wa.json.lock"
    lock.unlink()
    lock.mkdir()  # the lock file cannot be opened: every write fails
    done = run(rig.login.authenticate(account="alice", conn=rig.conn("alice"), receipt=o.receipt,
                                      webauthn=key.assert_(o.webauthn_options, ORIGIN)))
    assert done.ok and "write" in ran  # the store's counter decided; the file write failed on its own
    assert any(r["reason"] == "credentials-write-failed" for r in rig.audit.records)
    opts, csrf = form_of(b.get())
    r = b.post({"csrf": csrf, "name": "k2", "password": "pw", "webauthn": SoftKey("console.example.org")
                .register(opts, ORIGIN)})
    assert r.status == 400 and b"could not be saved" in r.body
    assert rig.audit.records[-1]["reason"] == "webauthn-store-failed"
