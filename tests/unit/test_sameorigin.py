"""The one CSRF rule (proxy.gate.sameorigin), and that every endpoint that checks it gives the same answer.

Header combinations are what each browser sends for a same-origin form post or fetch
(measured for Chromium; Firefox and Safari from their Fetch Metadata / Origin behaviour),
and the cross-site cases they send from another site.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from proxy.login.endpoints import login_endpoints
from proxy.login.testing import head, make_rig
from proxy.login.web import PRE_COOKIE
from proxy.http.messages import Local, Response
from proxy.gate.sameorigin import REFERRER_POLICY, cross_site
from tests.reactor_thread import resolve

HOST = (b"Host", b"gw.example")
SFS = b"Sec-Fetch-Site"

SAME_ORIGIN = {
    # Chromium posting a page with Referrer-Policy: no-referrer (certgate's pages before this rule)
    "chromium-no-referrer": [HOST, (b"Origin", b"null"), (SFS, b"same-origin")],
    # Chromium / Edge / Brave posting a page with Referrer-Policy: same-origin (certgate's pages now)
    "chromium": [HOST, (b"Origin", b"https://gw.example"), (SFS, b"same-origin")],
    "firefox": [HOST, (b"Origin", b"https://gw.example"), (SFS, b"same-origin")],
    "safari-16.4+": [HOST, (b"Origin", b"https://gw.example"), (SFS, b"same-origin")],
    # Safari before 16.4 (no Fetch Metadata), page with Referrer-Policy: same-origin
    "safari-old": [HOST, (b"Origin", b"https://gw.example")],
    # address bar / bookmark
    "user-initiated": [HOST, (SFS, b"none")],
    "curl": [HOST],
    "origin-case-and-port": [(b"Host", b"GW.example:8443"), (b"Origin", b"https://gw.EXAMPLE:8443")],
}
CROSS_SITE = {
    "chromium-cross-site": [HOST, (b"Origin", b"https://evil.example"), (SFS, b"cross-site")],
    "chromium-sandboxed-frame": [HOST, (b"Origin", b"null"), (SFS, b"cross-site")],
    "sibling-subdomain": [HOST, (b"Origin", b"https://x.gw.example"), (SFS, b"same-site")],
    "firefox-cross-site": [HOST, (SFS, b"cross-site")],
    "unknown-fetch-site": [HOST, (SFS, b"whatever")],
    "old-browser-other-origin": [HOST, (b"Origin", b"https://evil.example")],
    "old-browser-plain-http": [HOST, (b"Origin", b"http://gw.example")],
    "old-browser-other-port": [HOST, (b"Origin", b"https://gw.example:444")],
    "old-browser-opaque-origin": [HOST, (b"Origin", b"null")],
    "origin-without-host": [(b"Origin", b"https://gw.example")],
}


@pytest.mark.parametrize("name", sorted(SAME_ORIGIN))
def test_same_origin_combinations_pass(name):
    assert cross_site(head(b"POST", b"/", SAME_ORIGIN[name])) is None


@pytest.mark.parametrize("name", sorted(CROSS_SITE))
def test_cross_site_combinations_refused(name):
    why = cross_site(head(b"POST", b"/", CROSS_SITE[name]))
    assert why is not None and "\n" not in why


def test_reason_quotes_and_cuts_client_text():
    why = cross_site(head(b"POST", b"/", [HOST, (b"Origin", b"https://" + b"a" * 500 + b"\n<x>")]))
    assert why is not None and len(why) < 200 and "\n" not in why


# --------------------------------------------------------------------------- every endpoint, same answer

@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path)
    r.set_password("alice", "alice-pw")
    return r


def _login_page_post(rig, headers):
    ep = login_endpoints(rig.login)["/.certgate/login"]
    conn = rig.conn("alice")
    page = ep(head(b"GET", b"/.certgate/login", [HOST]), conn)
    cookie = next(v for k, v in page.headers if k == b"Set-Cookie").split(b";")[0].split(b"=", 1)[1]
    token = page.body.decode().split('name="csrf" value="', 1)[1].split('"', 1)[0]
    hs = [(b"Content-Type", b"application/x-www-form-urlencoded"),
          (b"Cookie", PRE_COOKIE.encode() + b"=" + cookie)] + list(headers)
    h = head(b"POST", b"/.certgate/login", hs)
    d = ep(h, conn)
    if isinstance(d, Response):
        return d.status
    assert isinstance(d, Local)
    res = d.handler(h, urlencode({"account": "alice", "password": "alice-pw", "csrf": token}).encode(), conn)
    out = []
    res.addBoth(out.append)
    return out[0].status


def _api_post(rig, headers):
    ep = login_endpoints(rig.login)["/.certgate/api/auth"]
    h = head(b"POST", b"/.certgate/api/auth", [(b"Content-Type", b"application/json")] + list(headers))
    conn = rig.conn("alice")
    d = ep(h, conn)
    if isinstance(d, Response):
        return d.status
    res = d.handler(h, json.dumps({"account": "alice", "password": "alice-pw"}).encode(), conn)
    out = []
    res.addBoth(out.append)
    return out[0].status


def _logout_post(rig, headers):
    from proxy.sessions.presence import session_endpoints

    ep = session_endpoints(rig.sessions)["/.certgate/logout"]
    return resolve(ep(head(b"POST", b"/.certgate/logout", list(headers)), rig.conn("alice"))).status


def _trusted_post(rig, headers):
    from proxy.sessions.presence import session_endpoints

    ep = session_endpoints(rig.sessions)["/.certgate/api/trusted-session"]
    return resolve(ep(head(b"POST", b"/.certgate/api/trusted-session", list(headers)), rig.conn("alice"))).status


ENDPOINTS = {"login-page": (_login_page_post, 303), "login-api": (_api_post, 200),
             "logout": (_logout_post, 200), "trusted-session": (_trusted_post, 401)}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("name", sorted(SAME_ORIGIN))
def test_every_endpoint_accepts_same_origin(rig, endpoint, name):
    fn, ok_status = ENDPOINTS[endpoint]
    assert fn(rig, SAME_ORIGIN[name]) == ok_status  # trusted-session: 401 = passed CSRF, no session cookie


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("name", sorted(CROSS_SITE))
def test_every_endpoint_refuses_cross_site(rig, endpoint, name):
    fn, _ = ENDPOINTS[endpoint]
    assert fn(rig, CROSS_SITE[name]) == 403


def test_pages_send_same_origin_referrer_policy(rig):
    page = login_endpoints(rig.login)["/.certgate/login"](head(b"GET", b"/.certgate/login", [HOST]), rig.conn("alice"))
    assert (b"Referrer-Policy", REFERRER_POLICY) in page.headers and REFERRER_POLICY == b"same-origin"
    assert b'<meta name="referrer" content="same-origin">' in page.body
