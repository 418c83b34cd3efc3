"""A security key in front of a real cockpit-ws (``kind = cockpit``, ``mode = bearer``): the
login starts on certgate's page (password, then the key), also from a deep link, and enters
Cockpit without a second prompt. (A password typed into Cockpit's own form for such an account
is refused with words pointing to certgate's page: tests/unit/test_webauthn_pages.py.)

The gateway runs docs/cockpit.md's configuration with the rules
``[["tls-cert", "password", "webauthn"], ["tls-cert", "password"]]`` and ``[webauthn]`` for
``localhost``; the account is a real local account (the bridge runs as it) without TOTP.
"""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from tests.harness.pki import Pki
from tests.harness.wait import free_port, Timer, wait_for
from tests.browser.conftest import Scene, account
from tests.harness.accounts import Accounts, PASSWORD
from tests.browser.test_cockpit import COCKPIT_SECTIONS, CockpitSite, cockpit_site, wait_for_shell
from tests.browser.test_webauthn import Authenticator, enrol

ACCOUNT = account("wkey")  # a local account; the run's pid in the name, as the suite's others
RULES = '[["tls-cert", "password", "webauthn"], ["tls-cert", "password"]]'


@pytest.fixture(scope="module")
def key_accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Accounts]:
    acc = Accounts(tmp_path_factory.mktemp("wa-cockpit-accounts"), (ACCOUNT,))
    try:
        yield acc.create(totp=())
    finally:
        acc.remove()


@pytest.fixture(scope="module")
def cockpit_key(tmp_path_factory: pytest.TempPathFactory, bpki: Pki, key_accounts: Accounts
                ) -> Iterator[CockpitSite]:
    folder = tmp_path_factory.mktemp("wa-cockpit")
    port = free_port()
    sections = {k: dict(v) for k, v in COCKPIT_SECTIONS.items()}
    sections.setdefault("listen", {})["port"] = port
    sections.setdefault("login", {})["required_auth_methods"] = RULES
    sections["webauthn"] = {"rp_id": "localhost", "origin": f"https://localhost:{port}",
                            "credentials": folder / "webauthn.json"}
    with cockpit_site(folder, bpki, key_accounts, sections, "wa-cockpit-gw") as c:
        yield c


def test_cockpit_login_starts_on_certgates_page_with_the_key(scene: Scene, cockpit_key: CockpitSite) -> None:
    scene.extra_reports.append(cockpit_key.report)
    site = scene.watch(cockpit_key.site)
    base = f"https://localhost:{site.port}"
    b = scene.browser("person", ACCOUNT)
    key = Authenticator(b)
    page = b.page

    # before any key: Cockpit's own form, the password, and Cockpit
    page.goto(base + "/")
    page.wait_for_selector("#login-user-input", state="visible", timeout=20000)
    page.fill("#login-user-input", ACCOUNT)
    page.fill("#login-password-input", PASSWORD)
    page.click("#login-button")
    wait_for_shell(page)
    b.step("cockpit with the password")

    # add a key on certgate's page (the certgate session from that login)
    enrol(b, site, "desk key")
    assert len(key.credentials()) == 1

    # a new login: Cockpit's page is replaced by certgate's, password then key, then Cockpit
    b.context.clear_cookies()
    t = Timer()
    page.goto(base + "/")
    page.wait_for_url(re.compile(r"/\.certgate/login\?next=/$"))
    b.step("certgate login page instead of cockpit's")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#webauthn-go")
    b.step("certgate asks for the key")
    page.click("#webauthn-go")
    wait_for_shell(page)
    scene.timing("cockpit login via certgate's page with the key", t())
    b.step("cockpit shell after the key")
    assert site.audit_has(event="cockpit-login", decision="redirect", reason="webauthn-on-certgate-page",
                          account=ACCOUNT), site.report()
    assert site.audit_has(event="login", decision="allow", account=ACCOUNT,
                          methods=["tls-cert", "password", "webauthn"]), site.report()
    wait_for(lambda: any(f"user={ACCOUNT}" in ln or ACCOUNT in ln for ln in cockpit_key.auth_lines()), 10,
             what="certgate-cockpit-auth letting the account in")

    # a deep link while logged out: certgate's page too, then Cockpit at that path
    b.context.clear_cookies()
    page.goto(base + "/system/logs")
    page.wait_for_url(re.compile(r"/\.certgate/login\?next=/system/logs$"))
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#webauthn-go")
    page.click("#webauthn-go")
    wait_for_shell(page)
    page.wait_for_url(re.compile(r"/system/logs$"))
    b.step("cockpit logs after the key")
    keyed = [ev for ev in site.audit() if ev.get("event") == "login" and ev.get("decision") == "allow"
             and ev.get("account") == ACCOUNT and ev.get("methods") == ["tls-cert", "password", "webauthn"]]
    assert len(keyed) == 2, site.report()
