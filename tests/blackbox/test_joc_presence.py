"""JOC's single-page GUI behind the real gateway: presence with a long-lived connection.

The emulator's GUI keeps one ``/joc/api/events`` long poll open after another on one
connection; certgate's presence script (injected into JOC's page) pings on new connections.
While the card is in, the pings re-prove it and the GUI keeps working for several times
``grace``; once the card is out, the long-poll connection it already had does not keep the
session alive: it ends at ``grace`` after the last proof and JOC's GUI gets ``401``.

Not a browser: the page's two loops are driven by this test with real TLS clients (the
Chromium scenario is in tests/browser/ when available). "Card in" is a client presenting the
certificate on each new connection, "card out" one presenting none (``client_auth = want``,
as a browser whose card was pulled).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.client import client_context, request
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.joc import JocEmulator
from tests.harness.pki import Pki

GRACE = 4.0
INTERVAL = 1.0


class Site:
    def __init__(self, pki: Pki, joc: JocEmulator, gw: Gateway) -> None:
        self.pki, self.joc, self.gw = pki, joc, gw


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder: Path = tmp_path_factory.mktemp("joc-presence")
    pki = Pki(folder / "pki")
    with JocEmulator(accounts={"alice": "joc-pw"}, event_hold=0.4) as joc:
        cfg = write_config(folder, pki, upstream=joc.url, extra={
            "listen": {"client_auth": "want"},
            "upstream": {"kind": "joc"},
            "login": {"required_auth_methods": '[["tls-cert", "password"]]', "password": "upstream"},
            "sessions": {"grace": GRACE, "presence_interval": INTERVAL}})  # presence: on by default for joc
        with Gateway(cfg) as gw:
            yield Site(pki, joc, gw)


def _login(site: Site) -> tuple[str, str]:
    auth = "Basic " + base64.b64encode(b"alice:joc-pw").decode()
    status, headers, body = request(site.gw.port, "POST", "/joc/api/authentication/login",
                                    cert=site.pki.client("alice"), ca=site.pki.ca_pem,
                                    headers={"Authorization": auth, "Content-Type": "application/json"}, body=b"{}")
    assert status == 200, body
    return headers["X-Access-Token"], headers.get_all("Set-Cookie")[0].split(";", 1)[0]  # type: ignore[index,union-attr]


class LongLived:
    """The GUI's keep-alive connection for its long polls. When the gateway closes it (its
    handshake is too old), a new one is opened, presenting the certificate only while the card
    is in, as a browser does."""

    def __init__(self, site: Site, token: str, cookie: str) -> None:
        self.site = site
        self.conn: http.client.HTTPSConnection | None = None
        self.headers = {"X-Access-Token": token, "Cookie": cookie, "Content-Type": "application/json",
                        "Accept": "application/json", "Host": f"localhost:{site.gw.port}"}
        self.opened = 0

    def events(self, card: bool) -> int:
        """One long poll; a reused connection the gateway closed meanwhile (it was idle at its
        handshake age) is replaced once, as browsers retry on a fresh connection."""
        reused = self.conn is not None
        try:
            return self._events(card)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            self.close()
            if not reused:
                raise
            return self._events(card)

    def _events(self, card: bool) -> int:
        if self.conn is None:
            cert = self.site.pki.client("alice") if card else None
            self.conn = http.client.HTTPSConnection("127.0.0.1", self.site.gw.port, timeout=10,
                                                    context=client_context(cert, self.site.pki.ca_pem))
            self.conn._server_hostname = "localhost"  # type: ignore[attr-defined]
            self.opened += 1
        self.conn.request("POST", "/joc/api/events", body=b"{}", headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        if resp.will_close:
            self.close()
        return resp.status

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _ping(site: Site, cookie: str, card: bool) -> int:
    """The presence script's ping on a new connection (the card presents its certificate, or none)."""
    status, _, _ = request(site.gw.port, "GET", "/.certgate/presence?visible=1",
                           cert=site.pki.client("alice") if card else None, ca=site.pki.ca_pem,
                           headers={"Cookie": cookie, "Accept": "application/json"})
    return status


def test_joc_page_gets_the_presence_script(site: Site) -> None:
    _, cookie = _login(site)
    status, _, body = request(site.gw.port, "GET", "/joc/", cert=site.pki.client("alice"), ca=site.pki.ca_pem,
                              headers={"Cookie": cookie, "Accept": "text/html"})
    assert status == 200 and b"JS7 JOC Cockpit (emulator)" in body
    assert b'<script src="/.certgate/presence.js"' in body


def test_card_in_keeps_the_gui_working_and_card_out_ends_it_at_grace(site: Site) -> None:
    token, cookie = _login(site)
    poller = LongLived(site, token, cookie)
    try:
        started = time.monotonic()
        polls = 0
        last_proof = time.monotonic()
        while time.monotonic() - started < 3 * GRACE:  # card in: several times grace
            assert poller.events(card=True) == 200, site.gw.log()[-2000:]
            polls += 1
            assert _ping(site, cookie, card=True) == 200
            last_proof = time.monotonic()
        assert polls >= 3 * GRACE / 0.6
        print(f"card in: {polls} long polls over {poller.opened} connection(s)")
        # card out: the long poll keeps its old connection; pings can no longer present the card
        ended_at = None
        deadline = last_proof + GRACE + 3
        while time.monotonic() < deadline:
            status = poller.events(card=False)
            if status == 401:
                ended_at = time.monotonic()
                break
            assert status == 200
            assert _ping(site, cookie, card=False) in (200, 401)
        assert ended_at is not None, "the session outlived grace after the card was pulled"
        took = ended_at - last_proof
        assert GRACE - 1.0 <= took <= GRACE + 1.5, took
        assert _ping(site, cookie, card=False) == 401
    finally:
        poller.close()
    log = site.gw.log()
    assert '"reason":"grace-expired"' in log or "grace-expired" in log


def test_joc_login_page_loads_without_a_session_and_the_api_stays_guarded(site: Site) -> None:
    """Before login: JOC's GUI page (presence script waiting) and its pre-login API calls pass;
    every other API path still needs certgate's session, however it is spelt."""
    cert, ca = site.pki.client("alice"), site.pki.ca_pem
    status, _, body = request(site.gw.port, "GET", "/joc/", cert=cert, ca=ca, headers={"Accept": "text/html"})
    assert status == 200 and b'data-await-session="on"' in body
    before = len(site.joc.requests)
    status, _, _ = request(site.gw.port, "POST", "/joc/api/iam/identityproviders", cert=cert, ca=ca,
                           headers={"Content-Type": "application/json", "Authorization": "Basic YWxpY2U6am9jLXB3"},
                           body=b"{}")
    assert status == 200
    [seen] = site.joc.requests[before:]
    assert seen.headers.get("Authorization", "") == ""  # no credential reaches JOC outside the login door
    for path in ("/joc/api/events", "/joc/x/../api/events", "/joc/%61pi/events", "/joc//api/events"):
        status, _, _ = request(site.gw.port, "POST", path, cert=cert, ca=ca,
                               headers={"Content-Type": "application/json", "Accept": "application/json"},
                               body=b"{}")
        assert status == 401, path
    assert len(site.joc.requests) == before + 1
