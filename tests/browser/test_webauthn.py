"""Security keys in Chromium: its virtual authenticator (DevTools ``WebAuthn`` domain through a
Playwright CDP session: CTAP2, internal transport, resident keys, user verification) against
certgate in front of the demo upstream.

The relying party is ``localhost`` (WebAuthn refuses IP addresses; the suite's server
certificate names localhost, and the certificate policy covers it). Rules:
``[["tls-cert", "password", "webauthn"], ["tls-cert", "password"]]``: a person without a key
logs in with the password, adds a key on ``/.certgate/webauthn``, and from then on needs it.

Scenarios: register and log in on the page; through the JSON API, a replayed assertion, an
assertion made on another origin, an assertion of another account's key and a counter that
went backwards are refused (each with its audit line), and the upstream sees none of them.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from proxy.login.passwords import set_password
from tests.harness.gateway import CERTGATE, DemoUpstream, Site
from tests.harness.pki import Pki
from tests.harness.wait import free_port, Timer, wait_for
from tests.browser.conftest import Scene, account
from tests.harness.accounts import Accounts, gateway_config, PASSWORD
from tests.harness.chromium import Browser

RULES = '[["tls-cert", "password", "webauthn"], ["tls-cert", "password"]]'
ALICE, BOB = account("wa"), account("wb")  # the run's pid in the names, as the suite's others

# The API ceremony run inside the page: password step, then the key (or a given assertion).
API_LOGIN = r"""async ([account, password, given, allow]) => {
  const post = (body, receipt) => fetch("/.certgate/api/auth", {method: "POST", credentials: "same-origin",
    headers: Object.assign({"Content-Type": "application/json"}, receipt ? {"Certgate-Auth-Receipt": receipt} : {}),
    body: JSON.stringify(body)});
  const r1 = await post({account, password});
  const b1 = await r1.json();
  const receipt = r1.headers.get("Certgate-Auth-Receipt");
  if (r1.status !== 401 || !b1.webauthn) return {step: 1, status: r1.status, body: b1};
  let assertion = given;
  if (!assertion) assertion = await window.__cgKey(b1.webauthn.publicKey, allow);
  const r2 = await post({account, webauthn: assertion}, receipt);
  let b2 = null; try { b2 = await r2.json(); } catch (e) {}
  return {step: 2, status: r2.status, body: b2, assertion, options: b1.webauthn.publicKey};
}"""

# Defines window.__cgKey(options[, allowIds]): navigator.credentials.get, the result as JSON.
KEY_HELPER = r"""() => {
  const buf = s => { s = s.replace(/-/g, "+").replace(/_/g, "/"); while (s.length % 4) s += "=";
    return Uint8Array.from(atob(s), c => c.charCodeAt(0)).buffer; };
  const b64 = a => btoa(String.fromCharCode(...new Uint8Array(a))).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
  window.__cgKey = async (o, allow) => {
    const ids = allow || o.allowCredentials.map(c => c.id);
    const c = await navigator.credentials.get({publicKey: Object.assign({}, o, {challenge: buf(o.challenge),
      allowCredentials: ids.map(id => ({type: "public-key", id: buf(id)}))})});
    const r = c.response;
    return {id: c.id, rawId: b64(c.rawId), type: c.type, clientExtensionResults: {},
      response: {clientDataJSON: b64(r.clientDataJSON), authenticatorData: b64(r.authenticatorData),
                 signature: b64(r.signature), userHandle: r.userHandle ? b64(r.userHandle) : undefined}};
  };
}"""


class Authenticator:
    """Chromium's virtual authenticator on one page (CDP ``WebAuthn`` domain)."""

    def __init__(self, browser: Browser) -> None:
        self.cdp = browser.context.new_cdp_session(browser.page)
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        self.id = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
            "isUserVerified": True, "automaticPresenceSimulation": True}})["authenticatorId"]
        self.cdp.send("Page.setBypassCSP", {"enabled": True})  # lets the test's own fetch() run on certgate pages

    def credentials(self) -> list[dict[str, Any]]:
        return list(self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})["credentials"])

    def put(self, cred: dict[str, Any], **changes: Any) -> None:
        """(Re-)add ``cred`` (as getCredentials gave it) with ``changes`` (e.g. ``signCount``)."""
        c = {k: cred[k] for k in ("credentialId", "isResidentCredential", "rpId", "privateKey", "userHandle",
                                  "signCount") if k in cred}
        c.update(changes)
        try:
            self.cdp.send("WebAuthn.removeCredential", {"authenticatorId": self.id,
                                                        "credentialId": c["credentialId"]})
        except Exception:
            pass  # not on this authenticator yet
        self.cdp.send("WebAuthn.addCredential", {"authenticatorId": self.id, "credential": c})


def start(folder: Path, pki: Pki, accounts: Accounts, upstream: DemoUpstream, *, webauthn: bool = True) -> Site:
    port = free_port()
    sections: dict[str, dict[str, object]] = {"listen": {"client_auth": "want", "port": port}}
    if webauthn:
        sections["login"] = {"required_auth_methods": RULES}
        sections["webauthn"] = {"rp_id": "localhost", "origin": f"https://localhost:{port}",
                                "credentials": folder / "webauthn.json", "user_verification": "required"}
    return Site(gateway_config(folder, pki, accounts, upstream=upstream.url, sections=sections), folder.name).start()


def url(site: Site, path: str = "/") -> str:
    return f"https://localhost:{site.port}{path}"


@pytest.fixture(scope="module")
def wa_accounts(tmp_path_factory: pytest.TempPathFactory) -> Accounts:
    acc = Accounts(tmp_path_factory.mktemp("webauthn-accounts"), (ALICE, BOB))
    for name in (ALICE, BOB):  # certgate's password file only: the demo upstream needs no local account
        set_password(acc.passwd, name, PASSWORD, n=2 ** 10, r=1)
    return acc


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, bpki: Pki, wa_accounts: Accounts,
         upstream: DemoUpstream) -> Iterator[Site]:
    s = start(tmp_path_factory.mktemp("wa-site"), bpki, wa_accounts, upstream)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def other_site(tmp_path_factory: pytest.TempPathFactory, bpki: Pki, wa_accounts: Accounts,
               upstream: DemoUpstream) -> Iterator[Site]:
    """Another origin on the same relying-party id (``https://localhost:OTHER``), no WebAuthn of its own."""
    s = start(tmp_path_factory.mktemp("wa-other"), bpki, wa_accounts, upstream, webauthn=False)
    yield s
    s.stop()


def password_login(b: Browser, site: Site, *, expect_key: bool) -> None:
    page = b.page
    page.goto(url(site, "/hello"))
    page.wait_for_url(re.compile(r"/\.certgate/login"))
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    if expect_key:
        page.wait_for_selector("#webauthn-go")
    else:
        page.wait_for_url(re.compile(r"/hello$"))


def enrol(b: Browser, site: Site, name: str, *, shots: bool = False) -> None:
    page = b.page
    page.goto(url(site, "/.certgate/webauthn"))
    page.wait_for_selector("#webauthn-go")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    if shots:
        b.step("enrolment page")
        b.doc_shot(page.locator("main"), "webauthn-enrol.png")
    page.click("#webauthn-go")
    page.wait_for_selector("#notice")
    if shots:
        b.step("key added")
        b.doc_shot(page.locator("main"), "webauthn-enrolled.png")
    assert name in page.inner_text("#keys"), b.text()


def api_login(b: Browser, account: str, given: Any = None, allow: list[str] | None = None) -> dict[str, Any]:
    b.page.evaluate(KEY_HELPER)
    return dict(b.page.evaluate(API_LOGIN, [account, PASSWORD, given, allow]))


def test_register_then_log_in_with_the_key(scene: Scene, site: Site, upstream: DemoUpstream) -> None:
    site = scene.watch(site)
    b = scene.browser("alice", ALICE)
    key = Authenticator(b)
    t = Timer()
    password_login(b, site, expect_key=False)  # no key yet: the password rule applies
    enrol(b, site, "blue key <b>", shots=True)
    scene.timing("password login and key enrolment", t())
    assert site.audit_has(event="webauthn", decision="add", account=ALICE, name="blue key <b>"), site.report()
    assert b.page.locator("#keys b").count() == 0  # the client-sent name is escaped on the page
    creds = key.credentials()
    assert len(creds) == 1 and creds[0]["rpId"] == "localhost", creds
    listed = subprocess.run([CERTGATE, "--config", str(site.config), "webauthn", "list", ALICE], capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0 and "'blue key <b>'" in listed.stdout and "last used never" in listed.stdout, listed

    b.context.clear_cookies()
    t = Timer()
    password_login(b, site, expect_key=True)  # with a key the password alone no longer suffices
    b.step("login asks for the key")
    b.doc_shot(b.page.locator("main"), "webauthn-login.png")
    assert "security key" in b.text().lower()
    b.page.click("#webauthn-go")
    b.page.wait_for_url(re.compile(r"/hello$"))
    scene.timing("login with password and key", t())
    b.step("upstream page")
    assert f"Hello, {ALICE}" in b.text(), b.text()
    assert site.audit_has(event="login", decision="allow", account=ALICE, methods=["tls-cert", "password",
                                                                                  "webauthn"]), site.report()
    assert key.credentials()[0]["signCount"] >= 1

    def used() -> dict[str, Any] | None:  # the counter and last use are written in a thread after the login
        listed = subprocess.run([CERTGATE, "webauthn", "list", "--json", "--config", str(site.config)],
                                capture_output=True, text=True, timeout=30)
        [row] = [json.loads(x) for x in listed.stdout.splitlines() if json.loads(x)["account"] == ALICE]
        return row if row["last_used"] is not None else None

    row = wait_for(used, 10, what="the key's last use in certgate webauthn list")
    assert row["sign_count"] == key.credentials()[0]["signCount"], row


def test_api_refuses_replay_other_origin_other_account_and_counter_regression(
        scene: Scene, site: Site, other_site: Site, upstream: DemoUpstream) -> None:
    site = scene.watch(site)
    a = scene.browser("alice", ALICE)
    akey = Authenticator(a)
    _fresh_key_for(a, site, ALICE)
    a.context.clear_cookies()
    a.page.goto(url(site, "/.certgate/none"))

    # a good login through the API
    ok = api_login(a, ALICE)
    assert ok["status"] == 200 and ok["body"]["methods"] == ["tls-cert", "password", "webauthn"], ok
    a.context.clear_cookies()  # from here on no session: nothing may reach the upstream
    before = len(upstream.requests())
    b = scene.browser("bob", BOB)  # (bob's own key, enrolled with the password, before the attacks)
    bkey = Authenticator(b)
    password_login(b, site, expect_key=False)
    enrol(b, site, "bob key")
    b.context.clear_cookies()
    before = len(upstream.requests())

    # 1. the same assertion again (with a new receipt): its challenge was used
    replay = api_login(a, ALICE, given=ok["assertion"])
    assert replay["step"] == 2 and replay["status"] == 401, replay
    wait_for(lambda: site.audit_has(event="login", decision="deny", account=ALICE, reason="webauthn-replay"), 10,
             what="the replay in the audit log")

    # 2. an assertion made on another origin of the same RP id (a phishing page relaying the challenge)
    a.page.goto(url(site, "/.certgate/none"))
    a.page.evaluate(KEY_HELPER)
    first = a.page.evaluate(r"""async ([account, password]) => {
      const r = await fetch("/.certgate/api/auth", {method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({account, password})});
      return {receipt: r.headers.get("Certgate-Auth-Receipt"), body: await r.json()};
    }""", [ALICE, PASSWORD])
    a.page.goto(f"https://localhost:{other_site.port}/.certgate/none")
    a.page.evaluate(KEY_HELPER)
    phished = a.page.evaluate("o => window.__cgKey(o)", first["body"]["webauthn"]["publicKey"])
    a.page.goto(url(site, "/.certgate/none"))
    relayed = a.page.evaluate(r"""async ([account, receipt, webauthn]) => {
      const r = await fetch("/.certgate/api/auth", {method: "POST", headers: {"Content-Type": "application/json",
        "Certgate-Auth-Receipt": receipt}, body: JSON.stringify({account, webauthn})});
      return r.status;
    }""", [ALICE, first["receipt"], phished])
    assert relayed == 401
    wait_for(lambda: site.audit_has(event="login", decision="deny", account=ALICE, reason="webauthn-wrong-origin"),
             10, what="the other origin in the audit log")

    # 3. bob's browser holds alice's key too, and signs with it while logging in as bob
    alice_cred = akey.credentials()[0]
    bkey.put(alice_cred)
    b.page.goto(url(site, "/.certgate/none"))
    alices_id = _b64url(alice_cred["credentialId"])
    other = api_login(b, BOB, allow=[alices_id])
    assert other["step"] == 2 and other["status"] == 401, other
    wait_for(lambda: site.audit_has(event="login", decision="deny", account=BOB, reason="webauthn-unknown-credential"),
             10, what="another account's key in the audit log")

    # 4. alice's key with its counter set back (a cloned key)
    cred = akey.credentials()[0]
    assert cred["signCount"] >= 1, cred
    akey.put(cred, signCount=0)
    a.page.goto(url(site, "/.certgate/none"))
    cloned = api_login(a, ALICE)
    assert cloned["step"] == 2 and cloned["status"] == 401, cloned
    wait_for(lambda: site.audit_has(event="webauthn", decision="deny", reason="counter-regression", account=ALICE),
             10, what="the counter regression in the audit log")
    assert site.audit_has(event="login", decision="deny", account=ALICE, reason="webauthn-counter-regression")
    # none of the refused attempts reached the upstream (Chromium's own favicon fetch of a page
    # loaded during the good login may arrive late, with that login's session)
    late = [r for r in upstream.requests()[before:] if r["path"] != "/favicon.ico"]
    assert late == [], late


def _b64url(std_b64: str) -> str:
    return std_b64.replace("+", "-").replace("/", "_").rstrip("=")


def _enrolled(site: Site, account: str) -> bool:
    path = Path(site.config).parent / "webauthn.json"
    return path.exists() and bool(json.loads(path.read_text())["accounts"].get(account))


def _fresh_key_for(b: Browser, site: Site, account: str) -> None:
    """A new authenticator for ``account``: an operator removes any old key (the CLI), then the
    person logs in with the password and enrols this authenticator's key."""
    if _enrolled(site, account):
        r = subprocess.run([CERTGATE, "webauthn", "remove", account, "--config", str(site.config)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert site.audit_has(event="webauthn", decision="remove", account=account), site.report()
    password_login(b, site, expect_key=False)
    enrol(b, site, "second key")
