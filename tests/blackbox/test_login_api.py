"""Black-box: certgate's JSON login API and login page through the real gateway process.

Real TLS with generated certificates, the real `certgate passwd` / `certgate totp` commands,
a recording upstream, SQLite store for the restart case.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import pyotp
import pytest

from tests.harness.client import request
from tests.harness.config import write_config
from tests.harness.gateway import CERTGATE, Gateway
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream, fixed

API = "/.certgate/api/auth"
JSON = {"Content-Type": "application/json"}


class Upstream(RecordingUpstream):
    """Records the account header of every request it gets; answers "upstream ok"."""

    def __init__(self) -> None:
        super().__init__(answer=fixed(b"upstream ok"))

    @property
    def seen(self) -> list[str | None]:
        return [(r.header_values("x-remote-user") or [None])[0] for r in self.requests]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


def setup(tmp_path: Path, upstream: Upstream, store: str = "memory") -> tuple[Pki, Path, str]:
    pki = Pki(tmp_path / "pki")
    pw = tmp_path / "passwords"
    for acct, secret in (("alice", "alice-pw"), ("bob", "bob-pw")):
        r = subprocess.run([CERTGATE, "passwd", acct, "--file", str(pw), "--password-stdin"],
                           input=secret + "\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([CERTGATE, "totp", "--secrets", str(tmp_path / "totp"), "--key", str(tmp_path / "totp.key"),
                        "enroll", "alice", "--no-verify"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    secret = pyotp.parse_uri(re.search(r"otpauth://\S+", r.stdout).group(0)).secret  # type: ignore[union-attr]
    cfg = write_config(tmp_path, pki, upstream=upstream.url, extra={
        "login": {"required_auth_methods": '[["tls-cert", "password"], ["tls-cert", "password", "totp"]]',
                  "password": "file", "password_file": str(pw), "totp_secrets": str(tmp_path / "totp"),
                  "totp_key": str(tmp_path / "totp.key"), "secret_key": str(tmp_path / "secret"),
                  "failure_limit": 3},
        "sessions": {"store": store}})
    return pki, cfg, secret


def post(gw: Gateway, pki: Pki, who: str, body: dict, headers: dict | None = None):
    return request(gw.port, "POST", API, cert=pki.client(who), ca=pki.ca_pem, headers={**JSON, **(headers or {})},
                   body=json.dumps(body).encode())


def test_single_and_multi_step_json_login(tmp_path: Path, upstream: Upstream) -> None:
    pki, cfg, secret = setup(tmp_path, upstream)
    with Gateway(cfg) as gw:
        # bob: certificate + password in one step
        st, hs, body = post(gw, pki, "bob", {"account": "bob", "password": "bob-pw"})
        assert st == 200, body
        assert json.loads(body)["methods"] == ["tls-cert", "password"]
        cookie = hs["Set-Cookie"].split(";")[0]
        st, _, body = request(gw.port, "GET", "/app", cert=pki.client("bob"), ca=pki.ca_pem,
                              headers={"Cookie": cookie})
        assert st == 200 and body == b"upstream ok" and upstream.seen[-1] == "bob"

        # alice is enrolled: password alone is a partial success with a receipt
        st, hs, body = post(gw, pki, "alice", {"account": "alice", "password": "alice-pw"})
        assert st == 401 and "Set-Cookie" not in hs
        receipt = hs["Certgate-Auth-Receipt"]
        b = json.loads(body)
        assert b["required_auth_methods"] == [["tls-cert", "password", "totp"]]
        assert b["receipt"]["methods"] == ["tls-cert", "password"]

        # the receipt is useless on bob's certificate
        st, _, body = post(gw, pki, "bob", {"account": "alice", "totp": pyotp.TOTP(secret).now()},
                           {"Certgate-Auth-Receipt": receipt})
        assert st == 401 and "error" in json.loads(body)

        # step 2 on alice's certificate: logged in
        code = pyotp.TOTP(secret).now()
        st, hs, body = post(gw, pki, "alice", {"account": "alice", "totp": code}, {"Certgate-Auth-Receipt": receipt})
        assert st == 200, body
        assert json.loads(body)["methods"] == ["tls-cert", "password", "totp"]
        # the same code (same step) again, single step: refused (replay)
        st, _, _ = post(gw, pki, "alice", {"account": "alice", "password": "alice-pw", "totp": code})
        assert st == 401

        # account != certificate
        st, _, body = post(gw, pki, "bob", {"account": "alice", "password": "alice-pw"})
        assert st == 401


def test_login_page_form(tmp_path: Path, upstream: Upstream) -> None:
    pki, cfg, _ = setup(tmp_path, upstream)
    with Gateway(cfg) as gw:
        st, hs, body = request(gw.port, "GET", "/.certgate/login?next=/app", cert=pki.client("bob"), ca=pki.ca_pem,
                               headers={"Accept": "text/html"})
        html = body.decode()
        assert st == 200 and 'value="bob"' in html and "CN=bob" in html
        pre = hs["Set-Cookie"].split(";")[0]
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]
        form = urlencode({"account": "bob", "password": "bob-pw", "csrf": token, "next": "/app"}).encode()
        st, hs, _ = request(gw.port, "POST", "/.certgate/login", cert=pki.client("bob"), ca=pki.ca_pem, body=form,
                            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": pre})
        assert st == 303 and hs["Location"] == "/app"
        # without the pre-auth cookie (login CSRF): refused
        st, _, _ = request(gw.port, "POST", "/.certgate/login", cert=pki.client("bob"), ca=pki.ca_pem, body=form,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert st == 403


@pytest.mark.parametrize("browser,extra,want", [
    ("chromium, page with no-referrer", {"Origin": "null", "Sec-Fetch-Site": "same-origin"}, 303),
    ("chromium/firefox/safari, same-origin policy", {"Origin": "ORIGIN", "Sec-Fetch-Site": "same-origin"}, 303),
    ("safari without fetch metadata", {"Origin": "ORIGIN"}, 303),
    ("curl", {}, 303),
    ("cross-site form", {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403),
    ("sandboxed cross-site frame", {"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403),
    ("sibling subdomain", {"Origin": "https://a.localhost", "Sec-Fetch-Site": "same-site"}, 403),
    ("old browser, other origin", {"Origin": "https://evil.example"}, 403),
])
def test_login_form_csrf_rule_over_the_wire(tmp_path: Path, upstream: Upstream, browser: str, extra: dict,
                                            want: int) -> None:
    """The headers each browser sends for a same-origin form post pass; the cross-site ones do not."""
    pki, cfg, _ = setup(tmp_path, upstream)
    with Gateway(cfg) as gw:
        st, hs, body = request(gw.port, "GET", "/.certgate/login?next=/app", cert=pki.client("bob"), ca=pki.ca_pem,
                               headers={"Accept": "text/html"})
        assert st == 200 and hs["Referrer-Policy"] == "same-origin"
        pre = hs["Set-Cookie"].split(";")[0]
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', body.decode()).group(1)  # type: ignore[union-attr]
        form = urlencode({"account": "bob", "password": "bob-pw", "csrf": token, "next": "/app"}).encode()
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": pre, "Accept": "text/html"}
        hdrs.update({k: v.replace("ORIGIN", f"https://localhost:{gw.port}") for k, v in extra.items()})
        st, hs, body = request(gw.port, "POST", "/.certgate/login", cert=pki.client("bob"), ca=pki.ca_pem,
                               body=form, headers=hdrs)
        assert st == want, (browser, body[:300])
        if want == 303:
            assert hs["Location"] == "/app"
        else:
            assert b"another site" in body


def test_lockout_survives_restart(tmp_path: Path, upstream: Upstream) -> None:
    pki, cfg, _ = setup(tmp_path, upstream, store="sqlite:" + str(tmp_path / "sessions.db"))
    with Gateway(cfg) as gw:
        for _ in range(3):
            st, _, _ = post(gw, pki, "bob", {"account": "bob", "password": "guess"})
            assert st == 401
        st, hs, _ = post(gw, pki, "bob", {"account": "bob", "password": "bob-pw"})
        assert st == 429 and int(hs["Retry-After"]) > 0
    with Gateway(cfg) as gw:
        st, _, _ = post(gw, pki, "bob", {"account": "bob", "password": "bob-pw"})
        assert st == 429
