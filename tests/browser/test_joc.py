"""A person in Chromium using JOC's GUI (the JOC emulator's single-page app, which keeps one
``/joc/api/events`` long poll open after another) behind certgate, with the card on a software
smart card: JOC's own login page loads without a certgate session and its login opens one;
with the card in the GUI keeps working for several times ``grace``; with the card out the
session ends at ``grace``; JOC's own "Log out" ends certgate's session too.

certgate runs docs/joc.md's setup (``kind = joc``, the account must be the certificate's CN,
certificate + password checked by JOC: ``password = upstream``) with only the times
shortened. The presence script is on by default for ``joc`` routes.
"""

from __future__ import annotations

import datetime
import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness.pki import Pki
from tests.harness.wait import Timer, wait_for
from tests.browser.conftest import Scene
from tests.harness.accounts import Accounts, gateway_config, PASSWORD
from tests.harness.chromium import Browser
from tests.harness.gateway import Site
from tests.browser.test_cockpit import hold, pump
from tests.harness.joc import JocEmulator

GRACE = 6.0  # [sessions] grace (default 300 s)
PRESENCE = 2.0  # [sessions] presence_interval (default: grace / 4, at most 30 s)
JOC_ACCOUNTS = ("cgbjocin", "cgbjocout", "cgbjoclogout")


class JocSite:
    def __init__(self, site: Site, joc: JocEmulator) -> None:
        self.site, self.joc = site, joc

    def report(self) -> str:
        paths = [f"{r.method} {r.path}" for r in self.joc.requests[-20:]]
        return "--- JOC emulator: last requests ---\n" + "\n".join(paths)


@pytest.fixture(scope="module")
def joc(tmp_path_factory: pytest.TempPathFactory, bpki: Pki, accounts: Accounts) -> Iterator[JocSite]:
    folder = tmp_path_factory.mktemp("joc-site")
    for name in JOC_ACCOUNTS:
        bpki.client(name)
    with JocEmulator(accounts={n: PASSWORD for n in JOC_ACCOUNTS}, event_hold=1.0) as emu:
        cfg = gateway_config(folder / "gw", bpki, accounts, upstream=emu.url, sections={
            "listen": {"client_auth": "want"},
            "upstream": {"kind": "joc"},
            "login": {"required_auth_methods": '[["tls-cert", "password"]]', "password": "upstream"},
            "sessions": {"grace": GRACE, "presence_interval": PRESENCE}})
        site = Site(cfg, "joc-gw").start()
        try:
            yield JocSite(site, emu)
        finally:
            site.stop()


def watch(scene: Scene, joc: JocSite) -> Site:
    scene.extra_reports.append(joc.report)
    return scene.watch(joc.site)


def events(page: Any) -> int:
    return int(page.inner_text("#events") or "0")


def joc_login(b: Browser, site: Site, account: str) -> None:
    """JOC's own login page (no certgate session needed to load it); until the GUI gets events."""
    page = b.page
    page.goto(site.url("/joc/"))
    page.wait_for_selector("#login-button", state="visible")
    assert "/.certgate/" not in page.url
    # the presence script waits on JOC's login page until JOC's login opened the session
    assert page.locator("script[src='/.certgate/presence.js'][data-await-session='on']").count() == 1
    b.step("JOC login page")
    page.fill("#account", account)
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("#dashboard", state="visible")
    wait_for(lambda: events(page) >= 1, 10, what="the GUI's first long poll to answer")
    b.step("JOC dashboard receiving events")


def test_card_in_keeps_joc_working_for_several_graces(scene: Scene, joc: JocSite) -> None:
    site = watch(scene, joc)
    b = scene.browser("person", "cgbjocin")
    joc_login(b, site, "cgbjocin")
    page = b.page
    before = events(page)
    held = 4 * GRACE
    hold(page, held, lambda: page.inner_text("#state") == "expired" or "/.certgate/" in page.url,
         "JOC's GUI lost its session while the card was in")
    after = events(page)
    b.step(f"after {held:.0f} s with the card in")
    scene.timing(f"JOC card in: GUI kept working (>= 4 x grace = {held:.0f} s)", held)
    assert after - before >= held / 1.0 / 2, (before, after)  # long polls kept coming back (1 s each)
    assert not site.audit_has(event="session", decision="end", account="cgbjocin"), site.report()


def test_card_out_ends_joc_at_grace(scene: Scene, joc: JocSite) -> None:
    """Card out: certgate ends the session at grace (nothing reaches JOC after that), and the
    GUI finds out (JOC's own 401 handling, or the presence script's page) soon after."""
    site = watch(scene, joc)
    b = scene.browser("person", "cgbjocout")
    joc_login(b, site, "cgbjocout")
    page = b.page
    b.card.pull()
    pulled = time.time()
    t = Timer()
    b.step("card pulled")

    def end_ts() -> float | None:
        ev = next((ev for ev in site.audit() if ev.get("event") == "session"
                   and ev.get("decision") == "end" and ev.get("account") == "cgbjocout"), None)
        if ev is None:
            return None
        return datetime.datetime.fromisoformat(ev["time"].replace("Z", "+00:00")).timestamp()

    wait_for(lambda: (pump(page), end_ts())[1], GRACE + 2 * PRESENCE + 10, interval=0.2,
             what="certgate to end the session after the card was pulled")
    ended = end_ts() - pulled  # type: ignore[operator]
    scene.timing("JOC card out -> certgate ended the session", ended)
    # not before grace after the last proof (at most one presence interval before the pull)
    assert GRACE - 2 * PRESENCE - 1 <= ended <= GRACE + 2 * PRESENCE + 2, ended

    def gone() -> bool:
        pump(page)
        try:  # JOC's 401 handling, the presence notice, or the page reloaded (and failing)
            return (page.locator("#dashboard:visible").count() == 0
                    or page.locator("#certgate-session-ended").count() > 0)
        except Exception:  # navigating
            return False

    wait_for(gone, 2 * PRESENCE + 25, interval=0.2, what="JOC's GUI to show that its session is over")
    scene.timing("JOC card out -> the GUI shows the session is over", t())
    b.step("session over")
    # the long poll in flight at the end may still be answered (held 1 s); nothing is asked after
    late = [r.path for r in joc.joc.requests if r.at > end_ts() + 1.5]  # type: ignore[operator]
    assert late == [], late


def test_joc_logout_ends_the_certgate_session(scene: Scene, joc: JocSite) -> None:
    site = watch(scene, joc)
    b = scene.browser("person", "cgbjoclogout")
    joc_login(b, site, "cgbjoclogout")
    page = b.page
    page.click("#logout")
    page.wait_for_selector("#login-button", state="visible")
    b.step("logged out of JOC")
    wait_for(lambda: site.audit_has(event="joc-login", decision="logout", account="cgbjoclogout"), 10,
             what="certgate to record JOC's logout")
    assert site.audit_has(event="session", decision="end", account="cgbjoclogout", reason="joc-logout"), \
        site.report()
    assert any(r.path == "/joc/api/authentication/logout" for r in joc.joc.requests)
    # JOC's login page works again (a new login opens a new session)
    page.goto(site.url("/joc/"))
    page.fill("#account", "cgbjoclogout")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("#dashboard", state="visible")
    b.step("logged in again")
