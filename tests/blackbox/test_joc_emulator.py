"""The JOC login emulator itself behaves like JOC's login API (research/cockpit-joc.md §5)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from pathlib import Path
from typing import Any

from tests.harness.client import client_context
from tests.harness.joc import IDLE_MS, JocEmulator, strip_domain
from tests.harness.pki import Pki


def post(joc: JocEmulator, path: str, headers: dict[str, str] | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], Any]:
    if context is not None:
        c: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", joc.port, context=context, timeout=10)
    else:
        c = http.client.HTTPConnection("127.0.0.1", joc.port, timeout=10)
    try:
        c.request("POST", path, body=b"{}", headers={"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), json.loads(r.read() or b"null")
    finally:
        c.close()


def basic(cred: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}


def test_password_login_token_logout() -> None:
    with JocEmulator(accounts={"alice": "pw"}) as joc:
        s, h, b = post(joc, "/joc/api/authentication/login")
        assert s == 420 and b["error"]["code"] == "JOC-420" and "missing" in b["error"]["message"]
        assert post(joc, "/joc/api/authentication/login", {"Authorization": "Basic %%%"})[0] == 420
        s, h, b = post(joc, "/joc/api/authentication/login", basic("alice:nope"))
        assert s == 401 and b == {"account": "alice", "isAuthenticated": False, "message": "Access denied",
                                  "isPermitted": False, "hasRole": False, "isApprover": False,
                                  "isApprovalRequestor": False, "forcePasswordChange": False, "enableTouch": True}
        s, h, b = post(joc, "/joc/api/authentication/login", basic("alice:pw"))
        token = h["X-Access-Token"]
        assert s == 200 and b["accessToken"] == token and h["X-JOC-Timeout"] == str(IDLE_MS)
        assert b["isAuthenticated"] is True and b["identityService"] == "JOC:JOC-INITIAL"
        assert post(joc, "/joc/api/touch", {"X-Access-Token": token})[0] == 200
        assert post(joc, "/joc/api/tree", {"X-Access-Token": "unknown"})[0] == 440
        assert post(joc, "/joc/api/authentication/logout")[0] == 420
        s, _, b = post(joc, "/joc/api/authentication/logout", {"X-Access-Token": token})
        assert s == 200 and b["accessToken"] == "" and b["account"] == "alice"
        assert post(joc, "/joc/api/tree", {"X-Access-Token": token})[0] == 440
        assert post(joc, "/joc/api/iam/identityproviders")[2]["needAccountPassword"] is True
        assert [r.path for r in joc.logins()] == ["/joc/api/authentication/login"] * 4


def test_idle_expiry_on_the_injected_clock() -> None:
    now = [1000.0]
    with JocEmulator(accounts={"alice": "pw"}, now=lambda: now[0]) as joc:
        token = post(joc, "/joc/api/authentication/login", basic("alice:pw"))[1]["X-Access-Token"]
        now[0] += IDLE_MS / 1000 - 1
        assert post(joc, "/joc/api/tree", {"X-Access-Token": token})[0] == 200  # refreshes
        now[0] += IDLE_MS / 1000 - 1
        assert post(joc, "/joc/api/tree", {"X-Access-Token": token})[0] == 200
        now[0] += IDLE_MS / 1000
        assert post(joc, "/joc/api/tree", {"X-Access-Token": token})[0] == 440


def test_forced_delay_grows_after_two_failures() -> None:
    import time

    with JocEmulator(accounts={"alice": "pw"}, delays=(0.0, 0.3)) as joc:
        t0 = time.monotonic()
        for _ in range(2):
            post(joc, "/joc/api/authentication/login", basic("alice:x"))
        fast = time.monotonic() - t0
        t0 = time.monotonic()
        post(joc, "/joc/api/authentication/login", basic("alice:x"))
        assert time.monotonic() - t0 >= 0.3 > fast / 2
        post(joc, "/joc/api/authentication/login", basic("alice:pw"))  # success resets
        t0 = time.monotonic()
        post(joc, "/joc/api/authentication/login", basic("alice:x"))
        assert time.monotonic() - t0 < 0.3


def test_certificate_modes_read_the_tls_peer_never_a_header(tmp_path: Path) -> None:
    assert strip_domain("alice@EXAMPLE") == "alice" == strip_domain("EXAMPLE\\alice")
    pki = Pki(tmp_path / "pki")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    ctx.load_verify_locations(pki.ca_pem)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # JOC's wantClientAuth
    with JocEmulator(accounts={"alice": "pw", "bob": "pw"}, mode="cert-single", ssl_context=ctx) as joc:
        alice = client_context(pki.client("alice"), pki.ca_pem)
        s, _, b = post(joc, "/joc/api/authentication/login", {"Authorization": "Basic Og=="}, alice)
        assert s == 200 and b["account"] == "alice"
        assert post(joc, "/joc/api/authentication/login", basic("bob:"), alice)[0] == 401
        anon = client_context(None, pki.ca_pem)
        assert post(joc, "/joc/api/authentication/login", {"Authorization": "Basic Og==",
                                                             "X-SSL-Client-CN": "alice"}, anon)[0] == 401
    with JocEmulator(accounts={"alice": "pw"}, mode="password+cert-2fa", ssl_context=ctx) as joc:
        alice = client_context(pki.client("alice"), pki.ca_pem)
        assert post(joc, "/joc/api/authentication/login", basic("alice@EXAMPLE:pw"), alice)[0] == 200
        assert post(joc, "/joc/api/authentication/login", basic("alice:bad"), alice)[0] == 401
        bob = client_context(pki.client("bob"), pki.ca_pem)
        assert post(joc, "/joc/api/authentication/login", basic("alice:pw"), bob)[0] == 401
