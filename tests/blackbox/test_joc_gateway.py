"""The JOC login emulator behind the REAL certgate gateway: the CN rule is enforced before JOC
sees the password, ``Basic Og==`` means the certificate's account, JOC's token passes through."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.client import request
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.joc import JocEmulator
from tests.harness.pki import Pki

LOGIN = "/joc/api/authentication/login"


class Site:
    def __init__(self, pki: Pki, joc: JocEmulator, gw: Gateway) -> None:
        self.pki, self.joc, self.gw = pki, joc, gw

    def post(self, cn: str, path: str, headers: dict[str, str]) -> tuple[int, object, bytes]:
        return request(self.gw.port, "POST", path, cert=self.pki.client(cn), ca=self.pki.ca_pem,
                       headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
                       body=b"{}")


def basic(cred: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder: Path = tmp_path_factory.mktemp("joc-gw")
    pki = Pki(folder / "pki")
    with JocEmulator(accounts={"alice": "joc-pw", "bob": "bob-pw"}) as joc:
        cfg = write_config(folder, pki, upstream=joc.url, extra={
            "upstream": {"kind": "joc"},
            "login": {"required_auth_methods": '[["tls-cert", "password"]]', "password": "upstream"}})
        with Gateway(cfg) as gw:
            yield Site(pki, joc, gw)


def test_right_cn_and_password_logs_in_and_token_passes_through(site: Site) -> None:
    before = len(site.joc.logins())
    status, headers, body = site.post("alice", LOGIN, basic("alice:joc-pw"))
    assert status == 200, (body, site.gw.log()[-2000:])
    token = headers["X-Access-Token"]  # type: ignore[index]
    data = json.loads(body)
    assert data["isAuthenticated"] is True and data["accessToken"] == token and data["account"] == "alice"
    cookies = [c for c in headers.get_all("Set-Cookie")]  # type: ignore[attr-defined]
    assert len(cookies) == 1 and cookies[0].startswith("__Host-certgate=")
    [seen] = site.joc.logins()[before:]
    assert base64.b64decode(seen.headers["Authorization"][6:]).decode() == "alice:joc-pw"
    assert seen.headers.get("X-Certgate-TOTP", "") == ""
    # later API calls carry JOC's token and certgate's session cookie
    cert_cookie = cookies[0].split(";", 1)[0]
    status, _, body = site.post("alice", "/joc/api/authentication/joc_cockpit_permissions",
                                {"X-Access-Token": token, "Cookie": cert_cookie})
    assert status == 200 and json.loads(body)["account"] == "alice"
    # without certgate's session the gateway refuses, JOC's token alone is not enough
    status, _, _ = site.post("alice", "/joc/api/authentication/joc_cockpit_permissions", {"X-Access-Token": token})
    assert status == 401


def test_wrong_cn_refused_before_joc_sees_the_password(site: Site) -> None:
    before = len(site.joc.requests)
    status, _, body = site.post("bob", LOGIN, basic("alice:joc-pw"))
    assert status == 401 and json.loads(body)["message"] == "Access denied"
    status, _, _ = site.post("alice", LOGIN, basic("Alice:joc-pw"))
    assert status == 401
    status, _, _ = site.post("alice", LOGIN, {})
    assert status == 420
    assert len(site.joc.requests) == before  # nothing reached the emulator
    log = site.gw.log()
    assert '"reason":"cn-mismatch"' in log and "joc-pw" not in log


def test_empty_account_means_the_certificate_cn(site: Site) -> None:
    before = len(site.joc.logins())
    status, _, _ = site.post("bob", LOGIN, {"Authorization": "Basic Og=="})
    [seen] = site.joc.logins()[before:]
    assert base64.b64decode(seen.headers["Authorization"][6:]).decode() == "bob:"
    assert status == 401  # JOC's password identity service needs the password
    status, headers, _ = site.post("bob", LOGIN, basic(":bob-pw"))
    assert status == 200 and headers["X-Access-Token"]  # type: ignore[index]


def test_joc_logout_ends_the_certgate_session(site: Site) -> None:
    """JOC's logout reaches JOC (its token dies) and ends certgate's session: the cookie is
    cleared, and the old cookie no longer opens anything, even with a fresh JOC login token."""
    status, headers, _ = site.post("alice", LOGIN, basic("alice:joc-pw"))
    assert status == 200
    token = headers["X-Access-Token"]  # type: ignore[index]
    cookie = headers.get_all("Set-Cookie")[0].split(";", 1)[0]  # type: ignore[attr-defined]
    api = "/joc/api/authentication/joc_cockpit_permissions"
    assert site.post("alice", api, {"X-Access-Token": token, "Cookie": cookie})[0] == 200
    before = len(site.joc.requests)
    status, headers, body = site.post("alice", "/joc/api/authentication/logout",
                                      {"X-Access-Token": token, "Cookie": cookie})
    assert status == 200 and json.loads(body)["isAuthenticated"] is False
    assert [r.path for r in site.joc.requests[before:]] == ["/joc/api/authentication/logout"]
    cleared = headers.get_all("Set-Cookie")  # type: ignore[attr-defined]
    assert any(c.startswith("__Host-certgate=;") or "Max-Age=0" in c for c in cleared), cleared
    status, _, body = site.post("alice", api, {"X-Access-Token": token, "Cookie": cookie})
    assert status == 401 and json.loads(body)["error"] == "session-ended", body
    assert '"reason":"joc-logout"' in site.gw.log()
    # a JOC session of another login keeps working: only the logged-out session ended
    status, headers, _ = site.post("alice", LOGIN, basic("alice:joc-pw"))
    other = headers.get_all("Set-Cookie")[0].split(";", 1)[0]  # type: ignore[attr-defined]
    token2 = headers["X-Access-Token"]  # type: ignore[index]
    assert site.post("alice", api, {"X-Access-Token": token2, "Cookie": other})[0] == 200
