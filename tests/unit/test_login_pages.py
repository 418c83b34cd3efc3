"""certgate's login page: CSRF (AUTH-03), prefilled account, certificate shown/explained, redirects."""

import dataclasses
import re
from html import escape as html_escape
from urllib.parse import urlencode

import pyotp
import pytest

from proxy.gate import wording
from proxy.login.endpoints import login_endpoints
from proxy.login.testing import head, make_rig
from proxy.login.totp import TotpSecrets
from proxy.login.web import PRE_COOKIE, safe_next
from proxy.http.messages import ConnContext, Local, Response
from trust import issue
from trust.presented import PresentedCertificate

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
FORM = (b"Content-Type", b"application/x-www-form-urlencoded")


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path)
    r.set_password("alice", "alice-pw")
    return r


def page(rig, conn=None, target=b"/.certgate/login?next=/app/x", cookies=()):
    hs = [(b"Cookie", f"{PRE_COOKIE}={c}".encode()) for c in cookies]
    return login_endpoints(rig.login)["/.certgate/login"](head(b"GET", target, hs), conn or rig.conn("alice"))


def pre_cookie(resp):
    for k, v in resp.headers:
        if k == b"Set-Cookie" and v.startswith(PRE_COOKIE.encode() + b"="):
            return v.split(b";")[0].split(b"=", 1)[1].decode()
    return None


def field(html, name):
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    return m.group(1) if m else None


def post(rig, form, *, cookie=None, conn=None, extra=()):
    hs = [FORM] + list(extra)
    if cookie:
        hs.append((b"Cookie", f"{PRE_COOKIE}={cookie}".encode()))
    h = head(b"POST", b"/.certgate/login", hs)
    conn = conn or rig.conn("alice")
    d = login_endpoints(rig.login)["/.certgate/login"](h, conn)
    if isinstance(d, Response):
        return d
    assert isinstance(d, Local)
    res = d.handler(h, urlencode(form).encode(), conn)
    if isinstance(res, Response):
        return res
    out = []
    res.addBoth(out.append)
    return out[0]


def start(rig, conn=None):
    r = page(rig, conn)
    cookie = pre_cookie(r)
    return cookie, field(r.body.decode(), "csrf")


def hval(resp, name):
    return [v for k, v in resp.headers if k.lower() == name]


def test_page_prefills_account_and_shows_certificate(rig, tmp_path):
    ca = issue.ca()
    leaf = issue.client(ca, "alice")
    ident = dataclasses.replace(rig.conn("alice").identity, certificate=PresentedCertificate.parse(issue.der(leaf.cert)))
    r = page(rig, ConnContext(identity=ident, connected_at=0))
    html = r.body.decode()
    assert r.status == 200
    assert 'id="account" name="account" type="text" value="alice"' in html
    assert "CN=alice" in html
    assert leaf.cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC") in html
    assert 'name="password"' in html and 'name="totp"' not in html
    assert field(html, "next") == "/app/x"
    assert "<script" not in html
    csp = hval(r, b"content-security-policy")[0]
    assert b"default-src 'none'" in csp and b"script-src" not in csp and b"form-action 'self'" in csp
    assert b"frame-ancestors 'none'" in csp and b"unsafe-inline" not in csp
    set_cookie = [v for v in hval(r, b"set-cookie") if v.startswith(PRE_COOKIE.encode())][0]
    assert b"Secure" in set_cookie and b"HttpOnly" in set_cookie and b"SameSite=Strict" in set_cookie
    assert b"Path=/" in set_cookie and b"Domain" not in set_cookie


def test_label_for_every_input(rig):
    TotpSecrets(rig.folder / "totp", rig.folder / "totp.key").store("alice", SECRET, 0)
    html = page(rig).body.decode()
    for name in ("account", "password"):  # step 1: the account and the password only
        assert f'<label for="{name}">' in html and f'id="{name}"' in html
    assert 'id="totp"' not in html and 'lang="en"' in html
    assert html.count('name="account"') == 1 and html.count(">Account<") == 1  # one account field


def test_refused_certificate_explained_without_form(rig):
    r = page(rig, rig.conn("alice", ok=False, reason_code="unknown-ca",
                           invalid_reason="unknown-ca: issuer CN=Evil CA is not in the trust store"))
    html = r.body.decode()
    assert "<form" not in html and "Certificate refused" in html
    assert "it was not issued by an authority this gateway trusts" in html
    assert "unknown-ca" not in html and "trust store" not in html  # no raw verdict strings
    assert 'href="/.certgate/login?next=/app/x">Try again</a>' in html
    r = page(rig, rig.conn(None, presented=False))
    assert html_escape(wording.NO_CERTIFICATE) in r.body.decode() and "<form" not in r.body.decode()


def test_login_success_303_to_next_with_session_cookie(rig):
    cookie, token = start(rig)
    r = post(rig, {"account": "alice", "password": "alice-pw", "csrf": token, "next": "/app/x?y=1"}, cookie=cookie)
    assert r.status == 303 and hval(r, b"location") == [b"/app/x?y=1"]
    cookies = hval(r, b"set-cookie")
    assert any(c.startswith(b"__Host-certgate=") for c in cookies)
    assert any(c.startswith(PRE_COOKIE.encode() + b"=;") for c in cookies)  # pre-auth cookie cleared


@pytest.mark.parametrize("nxt", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x",
                                 "/ok\r\nSet-Cookie: x", "/.certgate/login", ""])
def test_no_open_redirect(rig, nxt):
    cookie, token = start(rig)
    r = post(rig, {"account": "alice", "password": "alice-pw", "csrf": token, "next": nxt}, cookie=cookie)
    assert r.status == 303 and hval(r, b"location") == [b"/"]
    assert safe_next(nxt) == "/"


def test_csrf_token_required(rig):
    """AUTH-03: without the token, with another browser's token, or without the cookie: 403, no session."""
    cookie, token = start(rig)
    other_cookie, other_token = start(rig)
    for form_token, c in ((None, cookie), ("0" * 64, cookie), (other_token, cookie), (token, None), (token, "x" * 43)):
        form = {"account": "alice", "password": "alice-pw"}
        if form_token:
            form["csrf"] = form_token
        r = post(rig, form, cookie=c)
        assert r.status == 403 and not any(v.startswith(b"__Host-certgate=") for v in hval(r, b"set-cookie"))
    assert rig.audit.records[-1]["reason"] == "csrf-token"


@pytest.mark.parametrize("extra", [((b"Origin", b"https://evil.example"), (b"Host", b"gw.example")),
                                   ((b"Sec-Fetch-Site", b"cross-site"),), ((b"Sec-Fetch-Site", b"same-site"),),
                                   ((b"Origin", b"null"), (b"Host", b"gw.example"))])
def test_cross_site_post_refused(rig, extra):
    """AUTH-03: login CSRF from another site is refused even with a valid token."""
    cookie, token = start(rig)
    r = post(rig, {"account": "alice", "password": "alice-pw", "csrf": token}, cookie=cookie, extra=extra)
    assert r.status == 403 and b"another site" in r.body


def test_same_origin_post_accepted(rig):
    cookie, token = start(rig)
    r = post(rig, {"account": "alice", "password": "alice-pw", "csrf": token}, cookie=cookie,
             extra=((b"Origin", b"https://gw.example"), (b"Host", b"gw.example"), (b"Sec-Fetch-Site", b"same-origin")))
    assert r.status == 303


def test_failure_is_uniform_page(rig):
    cookie, token = start(rig)
    r = post(rig, {"account": "alice", "password": "nope", "csrf": token}, cookie=cookie)
    assert r.status == 401 and b"Authentication failed" in r.body
    assert field(r.body.decode(), "csrf") == token  # same browser, same token


def test_step_one_asks_the_password_step_two_only_the_code(rig):
    """Rules [[cert, password, totp]]: step 1 = account + password; step 2 = only the code, account read-only."""
    TotpSecrets(rig.folder / "totp", rig.folder / "totp.key").store("alice", SECRET, 0)
    cookie, token = start(rig)
    first = page(rig).body.decode()
    assert 'id="password"' in first and 'id="totp"' not in first and "<h1>Log in</h1>" in first
    r = post(rig, {"account": "alice", "password": "alice-pw", "csrf": token}, cookie=cookie)
    html = r.body.decode()
    assert r.status == 401 and "<h1>Log in: one more step</h1>" in html
    assert 'id="totp"' in html and 'id="password"' not in html
    assert 'name="account" type="text" value="alice" required' in html and " readonly>" in html
    assert html.count('name="account"') == 1
    assert "Password accepted. Enter the code from your authenticator app to finish logging in." in html


def test_refusals_use_the_shared_plain_words(rig):
    cookie, token = start(rig)
    r = post(rig, {"account": "bob", "password": "alice-pw", "csrf": token}, cookie=cookie)
    assert r.status == 401 and html_escape(wording.WRONG_ACCOUNT) in r.body.decode()


@pytest.mark.parametrize("ctype,body,status", [(b"text/plain", b"x", 415), (None, b"\xff", 400),
                                               (None, b"account=a&account=b", 400)])
def test_error_pages_lead_back_to_the_login(rig, ctype, body, status):
    hs = [(b"Content-Type", ctype or b"application/x-www-form-urlencoded")]
    h = head(b"POST", b"/.certgate/login", hs)
    d = login_endpoints(rig.login)["/.certgate/login"](h, rig.conn("alice"))
    r = d.handler(h, body, rig.conn("alice"))
    assert r.status == status and b'<a href="/.certgate/login">Back to the login page</a>' in r.body


def test_two_step_page(rig):
    TotpSecrets(rig.folder / "totp", rig.folder / "totp.key").store("alice", SECRET, 0)
    cookie, token = start(rig)
    r = post(rig, {"account": "alice", "password": "alice-pw", "csrf": token, "next": "/n"}, cookie=cookie)
    html = r.body.decode()
    assert r.status == 401 and 'name="totp"' in html and 'name="password"' not in html
    receipt = field(html, "receipt")
    assert receipt and receipt.startswith("cgr1.")
    code = pyotp.TOTP(SECRET).at(rig.clock.seconds())
    r2 = post(rig, {"account": "alice", "totp": code, "receipt": receipt, "csrf": token, "next": "/n"}, cookie=cookie)
    assert r2.status == 303 and hval(r2, b"location") == [b"/n"]


def test_repeated_field_refused(rig):
    cookie, token = start(rig)
    h = head(b"POST", b"/.certgate/login", [FORM, (b"Cookie", f"{PRE_COOKIE}={cookie}".encode())])
    d = login_endpoints(rig.login)["/.certgate/login"](h, rig.conn("alice"))
    r = d.handler(h, f"account=alice&account=bob&csrf={token}".encode(), rig.conn("alice"))
    assert r.status == 400


def test_throttled_page_429(rig):
    cookie, token = start(rig)
    for _ in range(5):
        post(rig, {"account": "alice", "password": "x", "csrf": token}, cookie=cookie)
    r = post(rig, {"account": "alice", "password": "alice-pw", "csrf": token}, cookie=cookie)
    assert r.status == 429 and hval(r, b"retry-after") == [b"900"]


def test_put_405(rig):
    r = login_endpoints(rig.login)["/.certgate/login"](head(b"PUT", b"/.certgate/login"), rig.conn("alice"))
    assert r.status == 405
