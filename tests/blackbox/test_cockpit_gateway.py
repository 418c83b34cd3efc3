"""A REAL cockpit-ws behind the REAL certgate gateway: Cockpit's own login, TOTP through
X-Conversation, a wrong CN refused before cockpit-ws, then /cockpit/socket running a command.

cockpit-ws runs ``certgate cockpit-auth`` with a config sharing the gateway's secret key and
sqlite store, exactly like an installation where both read /etc/certgate/certgate.conf.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Iterator

import pyotp
import pytest

from proxy.login.passwords import set_password
from proxy.login.totp import TotpSecrets
from tests.harness.client import client_context, request
from tests.harness.cockpit import bridge_account, cockpit_auth_ws, cockpit_run
from tests.harness.cockpit_ws import CockpitWs
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.wait import wait_for

USER = bridge_account()
PW = "cockpit front door"
TOTP_SECRET = pyotp.random_base32()


class Site:
    def __init__(self, folder: Path, pki: Pki, ws: CockpitWs, gw: Gateway) -> None:
        self.folder, self.pki, self.ws, self.gw = folder, pki, ws, gw

    def login(self, cn: str, headers: dict[str, str]) -> tuple[int, object, bytes]:
        return request(self.gw.port, "GET", "/cockpit/login", cert=self.pki.client(cn), ca=self.pki.ca_pem,
                       headers={"X-Superuser": "none", **headers})

    def socket_run(self, cn: str, cookies: str, argv: list[str]) -> dict:
        ctx = client_context(self.pki.client(cn), self.pki.ca_pem)
        origin = f"https://127.0.0.1:{self.gw.port}"  # --for-tls-proxy: https://<Host>, Host preserved
        return cockpit_run(f"wss://127.0.0.1:{self.gw.port}/cockpit/socket", origin, {"Cookie": cookies}, argv,
                           ssl_ctx=ctx, server_hostname="localhost")

    def auth_lines(self) -> int:
        return self.ws.log().count("certgate-cockpit-auth[")


def basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


def cookies_of(msg: object) -> dict[str, str]:
    out = {}
    for v in msg.get_all("Set-Cookie") or []:  # type: ignore[attr-defined]
        name, _, rest = v.split(";", 1)[0].partition("=")
        out[name] = rest
    return out


def start_site(folder: Path, rules: str, totp: bool) -> Iterator[Site]:
    pki = Pki(folder / "pki", clients=(USER, "bob"))
    gwdir = folder / "gw"
    gwdir.mkdir()
    set_password(gwdir / "passwd", USER, PW, n=2 ** 10, r=1)
    if totp:
        TotpSecrets(gwdir / "totp", gwdir / "totp.key").store(USER, TOTP_SECRET, 0.0)
    with cockpit_auth_ws(folder / "cockpit-auth", secret=gwdir / "certgate.secret",
                         store=f"sqlite:{gwdir / 'sessions.db'}") as ws:
        login = {"required_auth_methods": rules, "password": "file", "password_file": gwdir / "passwd",
                 "secret_key": gwdir / "certgate.secret"}
        if totp:
            login |= {"totp_secrets": gwdir / "totp", "totp_key": gwdir / "totp.key"}
        cfg = write_config(gwdir, pki, upstream=ws.base_url, extra={
            "upstream": {"kind": "cockpit"}, "login": login,
            "sessions": {"store": f"sqlite:{gwdir / 'sessions.db'}"},
            "cockpit": {"mode": "bearer"}})
        with Gateway(cfg) as gw:
            yield Site(folder, pki, ws, gw)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from start_site(tmp_path_factory.mktemp("cockpit-gw"), '[["tls-cert", "password"]]', totp=False)


@pytest.fixture(scope="module")
def totp_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from start_site(tmp_path_factory.mktemp("cockpit-gw-totp"), '[["tls-cert", "password", "totp"]]',
                          totp=True)


def test_login_page_is_reachable_before_login(site: Site) -> None:
    status, headers, body = request(site.gw.port, "GET", "/", cert=site.pki.client(USER), ca=site.pki.ca_pem,
                                    headers={"Accept": "text/html"})
    assert status == 200 and b"cockpit/static/login.js" in body
    status, _, body = request(site.gw.port, "GET", "/cockpit/static/login.js", cert=site.pki.client(USER),
                              ca=site.pki.ca_pem)
    assert status == 200 and len(body) > 1000
    # the page's automatic login without credentials: 401, so login.js shows its form
    status, _, _ = site.login(USER, {})
    assert status == 401
    # anything else needs certgate's session
    status, _, _ = request(site.gw.port, "GET", "/cockpit/@localhost/manifests.json", cert=site.pki.client(USER),
                           ca=site.pki.ca_pem, headers={"Accept": "application/json"})
    assert status == 401


def test_deep_link_without_a_session_shows_cockpits_login_there(site: Site) -> None:
    """A bookmark (or the reload after Cockpit's Logout) without a live certgate session: cockpit-ws's
    own login page at that path, so one login by Cockpit's form brings the person back to it."""
    for cookie in ("", "cockpit=stale; __Host-certgate=" + "A" * 43):
        hs = {"Accept": "text/html,application/xhtml+xml", **({"Cookie": cookie} if cookie else {})}
        status, headers, body = request(site.gw.port, "GET", "/system/services", cert=site.pki.client(USER),
                                        ca=site.pki.ca_pem, headers=hs)
        assert status == 200 and b"cockpit/static/login.js" in body, (status, body[:300])
        assert headers.get("Location") is None
    # not for what a page fetches: still 401 there
    status, _, _ = request(site.gw.port, "GET", "/system/services", cert=site.pki.client(USER), ca=site.pki.ca_pem,
                           headers={"Accept": "application/json"})
    assert status == 401


def test_password_login_then_socket_runs_a_command(site: Site) -> None:
    status, headers, body = site.login(USER, basic(USER, PW))
    assert status == 200, (body, site.ws.log()[-2000:], site.gw.log()[-2000:])
    jar = cookies_of(headers)
    assert "cockpit" in jar and "__Host-certgate" in jar
    assert json.loads(body)["login-data"]["certgate-account"] == USER
    cookie = f"cockpit={jar['cockpit']}; __Host-certgate={jar['__Host-certgate']}"
    run = site.socket_run(USER, cookie, ["id", "-un"])
    assert run["subprotocol"] == "cockpit1" and run["init"]["version"] == 1
    assert run["output"].strip() == USER
    # cockpit's cookie alone does not get through certgate
    with pytest.raises(Exception):
        site.socket_run(USER, f"cockpit={jar['cockpit']}", ["id"])
    # nor certgate's cookie from another certificate (the session is bound to the certificate)
    with pytest.raises(Exception):
        site.socket_run("bob", cookie, ["id"])


def test_wrong_cn_refused_before_cockpit_ws(site: Site) -> None:
    before = site.auth_lines()
    # CN != user: 403 with the reason phrase cockpit's login page shows (certgate's own words)
    status, _, body = site.login("bob", basic(USER, PW))
    assert status == 403 and "does not belong to the account you entered" in json.loads(body)["message"]
    status, _, _ = site.login(USER, basic("bob", PW))
    assert status == 403
    status, _, _ = site.login(USER, basic(USER, "wrong password"))
    assert status == 401
    assert site.auth_lines() == before  # cockpit-ws never started its auth command
    log = site.gw.log()
    assert '"reason":"cn-mismatch"' in log and PW not in log


def test_totp_through_x_conversation(totp_site: Site) -> None:
    s = totp_site
    status, headers, body = s.login(USER, basic(USER, PW))
    assert status == 401, body
    challenge = headers["WWW-Authenticate"]  # type: ignore[index]
    scheme, nonce, prompt = challenge.split(" ")
    assert scheme == "X-Conversation" and base64.b64decode(prompt).decode().startswith("Authenticator code")
    assert json.loads(body) == {"command": "authorize", "echo": False}
    code = pyotp.TOTP(TOTP_SECRET).now()
    answer = {"Authorization": f"X-Conversation {nonce} {base64.b64encode(code.encode()).decode()}"}
    status, headers, body = s.login(USER, answer)
    assert status == 200, (body, s.gw.log()[-2000:])
    jar = cookies_of(headers)
    cookie = f"cockpit={jar['cockpit']}; __Host-certgate={jar['__Host-certgate']}"
    assert s.socket_run(USER, cookie, ["echo", "hello from cockpit"])["output"] == "hello from cockpit\n"
    # the same nonce again: refused by certgate, like cockpit's "Invalid conversation token"
    status, _, _ = s.login(USER, answer)
    assert status == 401


def test_cockpit_logout_message_ends_the_certgate_session(site: Site) -> None:
    """Cockpit's logout control message on /cockpit/socket also ends certgate's trusted session."""
    import asyncio

    import websockets

    status, headers, body = site.login(USER, basic(USER, PW))
    assert status == 200, body
    jar = cookies_of(headers)
    cookie = f"cockpit={jar['cockpit']}; __Host-certgate={jar['__Host-certgate']}"
    probe = dict(cert=site.pki.client(USER), ca=site.pki.ca_pem,
                 headers={"Accept": "application/json", "Cookie": cookie})
    assert request(site.gw.port, "GET", "/cockpit/login", **probe)[0] == 200  # type: ignore[arg-type]

    async def logout() -> None:
        ctx = client_context(site.pki.client(USER), site.pki.ca_pem)
        async with websockets.connect(f"wss://127.0.0.1:{site.gw.port}/cockpit/socket", ssl=ctx,
                                      server_hostname="localhost", subprotocols=["cockpit1"],
                                      origin=f"https://127.0.0.1:{site.gw.port}",  # type: ignore[arg-type]
                                      additional_headers={"Cookie": cookie}, open_timeout=15) as ws:
            first = str(await asyncio.wait_for(ws.recv(), 15))
            assert json.loads(first.partition("\n")[2])["command"] == "init"
            await ws.send("\n" + json.dumps({"command": "init", "version": 1}))
            await ws.send("\n" + json.dumps({"command": "logout", "disconnect": True}))
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                pass

    asyncio.run(logout())
    wait_for(lambda: request(site.gw.port, "GET", "/cockpit/@localhost/manifests.json",  # type: ignore[arg-type]
                             **probe)[0] == 401, 10, what="certgate's session to end after cockpit's logout")
    assert '"reason":"cockpit-logout"' in site.gw.log()
