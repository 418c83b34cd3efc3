"""The REAL gateway against the JOC emulator and a REAL cockpit-ws: every spelling of the login
path, per class (dot segments, ``;`` parameters, slashes, escapes, case), is checked by the
front door or refused -- and nothing of it reaches the upstream.

The client holds alice's certificate AND a live certgate session of hers, and sends bob's
valid credentials: a spelling that slipped past the door would be forwarded with her session
and would log bob in at a lenient upstream (the emulator routes paths like a lenient Jetty;
shown first, directly against it).
"""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path
from typing import Iterator

import pytest

from proxy.login.passwords import set_password
from tests.harness.client import request
from tests.harness.cockpit import bridge_account, cockpit_auth_ws
from tests.harness.cockpit_ws import CockpitWs
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.joc import JocEmulator
from tests.harness.pki import Pki
from tests.harness.path_spellings import CLASSES, COCKPIT_LOGIN, COCKPIT_SPELLINGS, JOC_LOGIN, JOC_SPELLINGS, canonical, \
    expected
from tests.harness.relay import RecordingRelay

USER = bridge_account()
PW = "path spellings"


def basic(cred: str) -> str:
    return "Basic " + base64.b64encode(cred.encode()).decode()


def plain(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One plain-HTTP request straight to an upstream, the path sent byte for byte."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", f"127.0.0.1:{port}")
        for k, v in headers.items():
            c.putheader(k, v)
        body = b"{}" if method == "POST" else None
        if body is not None:
            c.putheader("Content-Length", "2")
        c.endheaders(body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def assert_certgate_answer(spelling: str, want: str, status: int, body: bytes, exact: bool,
                           refusal: int = 401) -> None:
    if want == "refused":
        assert status == 400 and body.startswith(b"bad request: request target refused: "), (spelling, status, body)
    else:
        assert status == (refusal if exact else 404), (spelling, status, body[:200])


# --------------------------------------------------------------------------- JOC


class JocSite:
    def __init__(self, pki: Pki, joc: JocEmulator, gw: Gateway, cookie: str) -> None:
        self.pki, self.joc, self.gw, self.cookie = pki, joc, gw, cookie

    def post(self, path: str, headers: dict[str, str]) -> tuple[int, object, bytes]:
        return request(self.gw.port, "POST", path, cert=self.pki.client("alice"), ca=self.pki.ca_pem,
                       headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
                       body=b"{}")


@pytest.fixture(scope="module")
def joc_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JocSite]:
    folder: Path = tmp_path_factory.mktemp("spell-joc")
    pki = Pki(folder / "pki")
    with JocEmulator(accounts={"alice": "joc-pw", "bob": "bob-pw"}) as joc:
        cfg = write_config(folder, pki, upstream=joc.url, extra={
            "upstream": {"kind": "joc"},
            "login": {"required_auth_methods": '[["tls-cert", "password"]]', "password": "upstream",
                      "failure_limit": 1000}})
        with Gateway(cfg) as gw:
            status, headers, body = request(gw.port, "POST", JOC_LOGIN, cert=pki.client("alice"), ca=pki.ca_pem,
                                            headers={"Authorization": basic("alice:joc-pw"),
                                                     "Content-Type": "application/json"}, body=b"{}")
            assert status == 200, body
            cookie = headers["Set-Cookie"].split(";", 1)[0]  # type: ignore[index]
            yield JocSite(pki, joc, gw, cookie)


def test_the_spellings_log_in_at_a_lenient_joc_directly(joc_site: JocSite) -> None:
    """Without certgate, each non-case spelling reaches the emulator's login and logs bob in."""
    for cls in CLASSES:
        for spelling in JOC_SPELLINGS[cls]:
            status, body = plain(joc_site.joc.port, "POST", spelling, {"Authorization": basic("bob:bob-pw")})
            if "%00" in spelling:  # a login only where a C string ends; the emulator keeps the NUL
                continue
            if cls == "case":
                assert status in (404, 440), spelling  # the emulator, like JAX-RS, is case-sensitive
            else:
                assert status == 200 and json.loads(body)["account"] == "bob", (spelling, status, body)


@pytest.mark.parametrize("cls", CLASSES)
def test_joc_login_spellings_through_the_gateway(joc_site: JocSite, cls: str) -> None:
    for spelling in JOC_SPELLINGS[cls]:
        want = expected(spelling, JOC_LOGIN)
        before = len(joc_site.joc.requests)
        status, _, body = joc_site.post(spelling, {"Authorization": basic("bob:bob-pw"), "Cookie": joc_site.cookie})
        assert_certgate_answer(spelling, want, status, body, canonical(spelling) == JOC_LOGIN)
        assert len(joc_site.joc.requests) == before, (spelling, joc_site.joc.requests[before:])  # nothing reached JOC
    log = joc_site.gw.log()
    assert "bob-pw" not in log
    if cls == "path parameters":  # one log line per refusal: reason and the escaped target
        assert "request refused (400) from 127.0.0.1: request target refused: ';' path parameters are not " \
               "accepted; target b'/joc/api/authentication/login;jsessionid=1'" in log, log[-3000:]


def test_the_session_still_reaches_joc_on_other_paths(joc_site: JocSite) -> None:
    """The same client and session do reach JOC on a path that is not a login (the test can fail)."""
    before = len(joc_site.joc.requests)
    status, _, _ = joc_site.post("/joc/api/./touch", {"Cookie": joc_site.cookie, "X-Access-Token": "x"})
    assert status == 440
    [seen] = joc_site.joc.requests[before:]
    assert seen.path == "/joc/api/touch"  # the canonical path, as certgate decided on it


# --------------------------------------------------------------------------- Cockpit


class CockpitSite:
    def __init__(self, pki: Pki, ws: CockpitWs, relay: RecordingRelay, gw: Gateway, cookie: str) -> None:
        self.pki, self.ws, self.relay, self.gw, self.cookie = pki, ws, relay, gw, cookie

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, object, bytes]:
        return request(self.gw.port, "GET", path, cert=self.pki.client(USER), ca=self.pki.ca_pem,
                       headers={"X-Superuser": "none", "Accept": "application/json", **headers})


@pytest.fixture(scope="module")
def cockpit_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CockpitSite]:
    folder: Path = tmp_path_factory.mktemp("spell-cockpit")
    pki = Pki(folder / "pki", clients=(USER, "bob"))
    gwdir = folder / "gw"
    gwdir.mkdir()
    set_password(gwdir / "passwd", USER, PW, n=2 ** 10, r=1)
    set_password(gwdir / "passwd", "bob", PW, n=2 ** 10, r=1)
    with cockpit_auth_ws(folder / "cockpit-auth", secret=gwdir / "certgate.secret",
                         store=f"sqlite:{gwdir / 'sessions.db'}") as ws, \
            RecordingRelay("127.0.0.1", ws.port) as relay:
        cfg = write_config(gwdir, pki, upstream=relay.url, extra={
            "upstream": {"kind": "cockpit"},
            "login": {"required_auth_methods": '[["tls-cert", "password"]]', "password": "file",
                      "password_file": gwdir / "passwd", "secret_key": gwdir / "certgate.secret",
                      "failure_limit": 1000},
            "sessions": {"store": f"sqlite:{gwdir / 'sessions.db'}"}, "cockpit": {"mode": "bearer"}})
        with Gateway(cfg) as gw:
            status, headers, body = request(gw.port, "GET", COCKPIT_LOGIN, cert=pki.client(USER), ca=pki.ca_pem,
                                            headers={"Authorization": basic(f"{USER}:{PW}"), "X-Superuser": "none"})
            assert status == 200, (body, ws.log()[-2000:])
            cookie = next(v.split(";", 1)[0] for v in headers.get_all("Set-Cookie")  # type: ignore[attr-defined]
                          if v.startswith("__Host-certgate="))
            yield CockpitSite(pki, ws, relay, gw, cookie)


def test_cockpit_ws_matches_its_login_path_exactly(cockpit_site: CockpitSite) -> None:
    """Measured on the real cockpit-ws (docs/forwarding.md): no case folding, no trailing slash,
    no decoding, no dot segments -- so the Cockpit door's extra claims are only a precaution."""
    port = cockpit_site.ws.port
    assert plain(port, "GET", COCKPIT_LOGIN, {})[0] == 401
    for p in ("/cockpit/login/", "/cockpit/LOGIN", "/cockpit/%6Cogin", "/cockpit/./login", "/cockpit//login"):
        assert plain(port, "GET", p, {})[0] == 404, p


@pytest.mark.parametrize("cls", CLASSES)
def test_cockpit_login_spellings_through_the_gateway(cockpit_site: CockpitSite, cls: str) -> None:
    s = cockpit_site
    for spelling in COCKPIT_SPELLINGS[cls]:
        want = expected(spelling, COCKPIT_LOGIN)
        before = len(s.relay.request_lines())
        status, _, body = s.get(spelling, {"Authorization": basic(f"bob:{PW}"), "Cookie": s.cookie})
        assert_certgate_answer(spelling, want, status, body, canonical(spelling) == COCKPIT_LOGIN, refusal=403)
        assert s.relay.request_lines()[before:] == [], spelling  # nothing reached cockpit-ws


def test_the_session_still_reaches_cockpit_on_other_paths(cockpit_site: CockpitSite) -> None:
    s = cockpit_site
    before = len(s.relay.request_lines())
    status, _, _ = s.get("/cockpit/static/../@localhost/manifests.json", {"Cookie": s.cookie})
    assert status in (200, 401, 404)
    assert s.relay.request_lines()[before:] == [(b"GET", b"/cockpit/@localhost/manifests.json")]


# --------------------------------------------------------------------------- generic routes


def test_generic_route_gets_the_canonical_target_and_unsafe_option_the_raw_one(tmp_path: Path) -> None:
    """Default: the upstream receives the canonical target (query untouched). With
    ``unsafe_forward_raw_target = yes`` on a route it receives the raw target, certgate logs
    UNSAFE at start, and refusals still stand."""
    from tests.harness.upstream import RecordingUpstream

    pki = Pki(tmp_path / "pki")
    with RecordingUpstream() as safe, RecordingUpstream() as raw:
        cfg = write_config(tmp_path, pki, upstream=safe.url, extra={"listen": {"client_auth": "none"}},
                           raw=f"[route:raw]\nprefix = /raw/\nurl = {raw.url}\nunsafe_forward_raw_target = yes\n")
        with Gateway(cfg) as gw:
            assert "UNSAFE: route(s) raw forward the raw request target" in gw.log()
            status, _, _ = request(gw.port, "GET", "/a/./b//%7e/../c?x=%2F..&y=/./", ca=pki.ca_pem)
            assert status == 200 and safe.paths() == ["/a/b/c?x=%2F..&y=/./"]
            status, _, _ = request(gw.port, "GET", "/x/../raw/./p//%7e", ca=pki.ca_pem)
            assert status == 200 and raw.paths() == ["/x/../raw/./p//%7e"]  # routed by the canonical /raw/p/~
            status, _, body = request(gw.port, "GET", "/raw/a%2Fb", ca=pki.ca_pem)
            assert status == 400 and len(raw.paths()) == 1 and len(safe.paths()) == 1
