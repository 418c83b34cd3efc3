"""certgate's own login page in Chromium, in front of the demo upstream (which echoes the
headers it received): password, then only the missing TOTP code; a wrong password, a wrong
code and a locked-out account each get a clear message; the upstream sees nothing of them.
When the service behind certgate is down, the browser shows certgate's page saying so.

The gateway runs ``client_auth = want`` with ``[["tls-cert", "password", "totp"]]``; the card
holds the account's certificate (Chromium's own TLS stack presents it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.pki import Pki
from tests.harness.wait import Timer, free_port, wait_for
from tests.browser.conftest import U_LOCKED, U_PAGE, Scene
from tests.harness.accounts import Accounts, gateway_config, PASSWORD
from tests.harness.gateway import DemoUpstream, Site

RULES = '[["tls-cert", "password", "totp"]]'


def start(folder: Path, pki: Pki, accounts: Accounts, upstream: DemoUpstream, **login: object) -> Site:
    cfg = gateway_config(folder, pki, accounts, upstream=upstream.url, sections={
        "listen": {"client_auth": "want"}, "login": {"required_auth_methods": RULES, **login}})
    return Site(cfg, folder.name).start()


@pytest.fixture(scope="module")
def page_site(tmp_path_factory: pytest.TempPathFactory, bpki: Pki, accounts: Accounts,
              upstream: DemoUpstream) -> Iterator[Site]:
    site = start(tmp_path_factory.mktemp("page-site"), bpki, accounts, upstream)
    yield site
    site.stop()


def test_password_then_only_the_missing_code(scene: Scene, page_site: Site, accounts: Accounts,
                                             upstream: DemoUpstream) -> None:
    site = scene.watch(page_site)
    b = scene.browser("person", U_PAGE)
    page = b.page
    t = Timer()
    page.goto(site.url("/reports/today?view=full"))
    page.wait_for_url(re.compile(r"/\.certgate/login\?next="))
    b.step("login page")
    text = b.text()
    assert U_PAGE in text, text  # the certificate the browser presented is shown
    assert page.locator("input[name=account]").count() == 1  # one account field
    assert page.locator("#password").is_visible()
    page.fill("#password", PASSWORD)
    if page.locator("#account").is_editable():
        assert page.input_value("#account") == U_PAGE
    b.step("password typed")
    page.click("button[type=submit]")
    page.wait_for_selector("#totp")
    b.step("second step asks for the code")
    # step 2: only what is missing
    assert page.locator("#password").count() == 0, b.text()
    assert page.locator("input[name=account]").count() <= 1
    page.fill("#totp", accounts.code(U_PAGE))
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/reports/today\?view=full$"))
    scene.timing("login (page load to upstream page, 2 steps)", t())
    b.step("upstream page")
    text = b.text()
    assert f"Hello, {U_PAGE}" in text, text
    assert re.search(rf"X-Remote-User\s+{U_PAGE}", text), text  # what the upstream received
    assert "__Host-certgate" not in text  # the session cookie never reaches the upstream
    assert {"method": "GET", "path": "/reports/today?view=full", "x-remote-user": U_PAGE} in upstream.requests()
    assert site.audit_has(event="session", decision="open", account=U_PAGE) or \
        site.audit_has(event="login", decision="allow", account=U_PAGE), site.report()


def test_wrong_password_and_wrong_code(scene: Scene, page_site: Site, accounts: Accounts,
                                       upstream: DemoUpstream) -> None:
    site = scene.watch(page_site)
    b = scene.browser("person", U_PAGE)
    page = b.page
    page.goto(site.url("/secret-wrong"))
    page.wait_for_selector("#password")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    page.wait_for_selector("[role=alert]")
    b.step("wrong password")
    text = b.text()
    assert "Authentication failed" in text and page.locator("#password").is_visible(), text
    assert "Hello" not in text
    # the right password, then a wrong code
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#totp")
    page.fill("#totp", accounts.wrong_code(U_PAGE))
    page.click("button[type=submit]")
    page.wait_for_selector("[role=alert]")
    b.step("wrong code")
    text = b.text()
    assert "Authentication failed" in text and re.search(r"\bcode\b", text), text
    assert "Hello" not in text
    # a way back to the login on the page
    assert page.locator("form, a[href*='/.certgate/login']").count() >= 1, text
    assert "/secret-wrong" not in upstream.paths()  # the upstream saw nothing of it
    assert site.audit_has(event="login", account=U_PAGE, reason="bad-password"), site.report()
    assert site.audit_has(event="login", account=U_PAGE, reason="bad-totp"), site.report()


def test_locked_out_account(scene: Scene, tmp_path: Path, bpki: Pki, accounts: Accounts,
                            upstream: DemoUpstream) -> None:
    site = scene.watch(start(tmp_path / "lockout-site", bpki, accounts, upstream, failure_limit=3, lockout=600))
    try:
        b = scene.browser("person", U_LOCKED)
        page = b.page
        page.goto(site.url("/locked"))
        for i in range(3):
            page.wait_for_selector("#password")
            page.fill("#password", f"wrong {i}")
            page.click("button[type=submit]")
            page.wait_for_selector("[role=alert]")
        b.step("three wrong passwords")
        page.fill("#password", PASSWORD)  # even the right password is refused now
        page.click("button[type=submit]")
        wait_for(lambda: "Too many failed attempts. Try again later." in b.text(), 10,
                 what="the lockout message")
        b.step("locked out")
        text = b.text()
        assert "Hello" not in text and "verdict" not in text.lower(), text
        assert site.audit_has(event="login", account=U_LOCKED, reason="throttled"), site.report()
        assert "/locked" not in upstream.paths()
    finally:
        site.stop()


def test_want_mode_without_a_certificate(scene: Scene, page_site: Site, upstream: DemoUpstream) -> None:
    site = scene.watch(page_site)
    b = scene.browser("no-card")  # no card in the reader: the browser presents nothing
    page = b.page
    page.goto(site.url("/no-card-here"))
    page.wait_for_load_state()
    b.step("explanation page")
    text = b.text()
    assert re.search(r"did not present a certificate", text, re.I), text
    assert re.search(r"smart card", text, re.I), text
    assert page.locator("#password").count() == 0  # no form: a login could not succeed
    assert "/no-card-here" not in upstream.paths()


def test_want_mode_with_a_refused_certificate(scene: Scene, page_site: Site, upstream: DemoUpstream) -> None:
    site = scene.watch(page_site)
    b = scene.browser("rogue", U_PAGE, rogue=True)  # same CN and issuer name, another CA key
    page = b.page
    resp = page.goto(site.url("/rogue-here"))
    b.step("explanation page")
    text = b.text()
    assert resp is not None and resp.status == 403, (resp and resp.status, text)
    assert re.search(r"does not accept the certificate", text, re.I), text
    assert re.search(r"not issued by an authority this gateway trusts", text), text
    assert not re.search(r"bad-signature|unknown-ca|refused:", text), text  # plain words, no verdict codes
    assert page.locator("#password").count() == 0
    assert "/rogue-here" not in upstream.paths()
    assert site.audit_has(event="gate", decision="deny", reason="certificate-invalid"), site.report()


def test_console_down_shows_certgates_page(scene: Scene, tmp_path: Path, bpki: Pki, accounts: Accounts) -> None:
    """The service behind certgate is not running: Chromium shows certgate's page saying so (in
    plain words, nothing internal), and reloading shows it again rather than a browser error."""
    port = free_port()  # nothing listens there
    cfg = gateway_config(tmp_path / "down", bpki, accounts, upstream=f"http://127.0.0.1:{port}", sections={
        "listen": {"client_auth": "need"}, "login": {"required_auth_methods": '[["tls-cert"]]'}})
    site = scene.watch(Site(cfg, "down").start())
    try:
        b = scene.browser("person", U_PAGE)
        page = b.page
        resp = page.goto(site.url("/console/system"))
        b.step("console down")
        text = b.text()
        assert resp is not None and resp.status == 502, (resp and resp.status, text)
        assert "The console is not reachable" in text and "Reload this page in a moment" in text, text
        assert str(port) not in text and "127.0.0.1" not in text, text
        resp = page.reload()
        assert resp is not None and resp.status == 502 and "The console is not reachable" in b.text()
    finally:
        site.stop()
