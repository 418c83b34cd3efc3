"""A person in Chromium using a REAL cockpit-ws behind certgate, with the card on a software
smart card: Cockpit's own login page (account, password, then the TOTP code asked through
X-Conversation), the Overview, a Terminal command running as that account; refusals that
cockpit-ws never sees; the session kept while the card is in, ended at ``grace`` once it is
out (``long_grace`` after activating a long trusted session); Cockpit's Logout; a bookmark.

certgate runs the configuration docs/cockpit.md gives (``kind = cockpit``, bearer mode,
``client_auth = want``, the documented login rules) with only the times shortened.
"""

from __future__ import annotations

import pwd
import re
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from proxy.login.keys import load_secret
from tests.blackbox import Pki, wait_for
from tests.browser.conftest import Scene
from tests.browser.harness import Browser
from tests.browser.sites import PASSWORD, Accounts, Site, Timer, gateway_config
from tests.cockpit_fixture import CockpitWs
from tests.cockpit_support import CERTGATE, write_cockpit_auth_config

GRACE = 6.0  # [sessions] grace (default 300 s)
LONG_GRACE = 16.0  # [sessions] long_grace (default 3600 s)
PRESENCE = 2.0  # [sessions] presence_interval (default 30 s)
COCKPIT_SECTIONS: dict[str, dict[str, object]] = {
    # docs/cockpit.md's setup ...
    "listen": {"client_auth": "want"},
    "upstream": {"kind": "cockpit"},
    "cockpit": {"mode": "bearer"},
    "login": {"required_auth_methods": '[["tls-cert", "password"], ["tls-cert", "password", "totp"]]'},
    # ... with the times shortened
    "sessions": {"grace": GRACE, "long_grace": LONG_GRACE, "presence_interval": PRESENCE, "inject_presence_script": "yes"},  # TEMP
}


class CockpitSite:
    def __init__(self, site: Site, ws: CockpitWs) -> None:
        self.site, self.ws = site, ws

    def auth_lines(self) -> list[str]:
        """certgate-cockpit-auth's decision lines in cockpit-ws's log (what cockpit-ws let in)."""
        return [ln for ln in self.ws.log().splitlines() if "certgate-cockpit-auth[" in ln]

    def report(self) -> str:
        return "--- cockpit-ws log tail ---\n" + "\n".join(self.ws.log().splitlines()[-30:])


@pytest.fixture(scope="module")
def cockpit(tmp_path_factory: pytest.TempPathFactory, bpki: Pki, accounts: Accounts) -> Iterator[CockpitSite]:
    folder = tmp_path_factory.mktemp("cockpit-site")
    secret = folder / "certgate.secret"
    load_secret(secret, create=True)
    store = f"sqlite:{folder / 'sessions.db'}"
    auth_cfg = write_cockpit_auth_config(folder / "cockpit-auth", extra={
        "login": {"secret_key": secret}, "sessions": {"store": store}})
    with CockpitWs([CERTGATE, "cockpit-auth", "--config", str(auth_cfg)]) as ws:
        cfg = gateway_config(folder / "gw", bpki, accounts, upstream=ws.base_url, sections=COCKPIT_SECTIONS,
                             secret=secret, store=store)
        site = Site(cfg, "cockpit-gw").start()
        try:
            yield CockpitSite(site, ws)
        finally:
            site.stop()


def watch(scene: Scene, cockpit: CockpitSite) -> Site:
    scene.extra_reports.append(cockpit.report)
    return scene.watch(cockpit.site)


class Sockets:
    """Cockpit's WebSockets of one page, with the time each closed."""

    def __init__(self, page: Any) -> None:
        self.opened: list[Any] = []
        self.closed: dict[int, float] = {}
        self.timer = Timer()
        page.on("websocket", self._on)

    def _on(self, ws: Any) -> None:
        if "/cockpit/socket" not in ws.url:
            return
        i = len(self.opened)
        self.opened.append(ws)
        ws.on("close", lambda *_: self.closed.setdefault(i, self.timer()))

    def all_closed(self) -> bool:
        return bool(self.opened) and len(self.closed) == len(self.opened)


def pump(page: Any) -> None:
    """One round trip to the browser, so that its events (WebSocket close, navigation) arrive."""
    try:
        page.evaluate("1")
    except Exception:
        pass


def hold(page: Any, seconds: float, bad: Callable[[], object], what: str) -> None:
    """Poll for ``seconds`` (every 0.25 s, pumping the browser's events); AssertionError as soon
    as ``bad()`` is true."""
    t = Timer()
    tick = threading.Event()
    while t() < seconds:
        pump(page)
        if bad():
            raise AssertionError(f"after {t():.1f} s: {what}")
        tick.wait(0.25)


def cockpit_login(b: Browser, site: Site, accounts: Accounts, account: str, *, path: str | None = "/",
                  code: bool = True) -> float:
    """Log in as ``account`` from ``path`` (None: from the page shown now) on whichever login page
    the person gets: Cockpit's own (password, then the code through X-Conversation) or certgate's
    (for a deep link while logged out). Returns seconds from the page load to Cockpit's shell."""
    page = b.page
    t = Timer()
    if path is not None:
        page.goto(site.url(path))
    wait_for_login_form(page)
    if page.locator("form[action='/.certgate/login']").count():
        b.step("certgate login page")
        certgate_page_login(b, accounts, account)
    else:
        b.step("cockpit login page")
        page.fill("#login-user-input", account)
        page.fill("#login-password-input", PASSWORD)
        page.click("#login-button")
        if code:
            page.wait_for_selector("#conversation-input", state="visible")
            prompt = page.inner_text("#conversation-prompt")
            assert "Authenticator code" in prompt, prompt
            b.step("totp asked through x-conversation")
            page.fill("#conversation-input", accounts.code(account))
            page.click("#login-button")
    wait_for_shell(page)
    secs = t()
    b.step("cockpit shell")
    return secs


def wait_for_login_form(page: Any) -> None:
    """Until Cockpit's login form or certgate's is visible."""
    forms = page.locator("#login-user-input").or_(page.locator("form[action='/.certgate/login']"))
    forms.first.wait_for(state="visible", timeout=20000)


def certgate_page_login(b: Browser, accounts: Accounts, account: str) -> None:
    """certgate's own login page: the password, then (step 2) the code."""
    page = b.page
    if page.locator("#account").is_editable():
        page.fill("#account", account)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#totp", state="visible")
    b.step("certgate asks for the code")
    page.fill("#totp", accounts.code(account))
    page.click("button[type=submit]")


def wait_for_shell(page: Any) -> None:
    page.wait_for_selector("#login", state="detached", timeout=30000)
    page.wait_for_selector("iframe[name^='cockpit1:localhost/']", state="attached", timeout=30000)


def frame_named(page: Any, prefix: str) -> Any:
    def find() -> Any:
        for f in page.frames:
            if f.name.startswith(prefix):
                return f
        return None

    return wait_for(find, 20, what=f"frame {prefix}")


def open_terminal(b: Browser, site: Site) -> Any:
    page = b.page
    page.goto(site.url("/system/terminal"))
    frame = frame_named(page, "cockpit1:localhost/system/terminal")
    frame.wait_for_selector(".xterm", state="visible", timeout=30000)
    wait_for(lambda: "$" in frame.inner_text(".xterm") or "#" in frame.inner_text(".xterm"), 20,
             what="the shell prompt in Cockpit's terminal")
    b.step("terminal")
    return frame


def run_in_terminal(b: Browser, frame: Any, account: str, marker_dir: Path) -> str:
    """Type a command in Cockpit's terminal; returns what it wrote (checked on disk: owner, content)."""
    token = secrets.token_hex(4)
    out = marker_dir / f"ran-{token}"
    frame.click(".xterm")
    b.page.keyboard.type(f"id -un > {out}; echo DONE-{token}-$(id -un)\n")
    wait_for(lambda: f"DONE-{token}-{account}" in frame.inner_text(".xterm"), 20,
             what="the command's output in the terminal")
    b.step("command ran")
    assert out.read_text().strip() == account
    assert pwd.getpwuid(out.stat().st_uid).pw_name == account  # the file belongs to that account
    return out.read_text()


@pytest.fixture(scope="module")
def marker_dir() -> Iterator[Path]:
    """A folder every account's shell may write into (pytest's own tmp is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="certgate-browser-terminal-"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- scenarios

def test_cockpit_login_totp_overview_terminal(scene: Scene, cockpit: CockpitSite, accounts: Accounts,
                                              marker_dir: Path) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", "cgbterm")
    before = len(cockpit.auth_lines())
    secs = cockpit_login(b, site, accounts, "cgbterm")
    scene.timing("Cockpit login (page, password, TOTP, shell)", secs)
    overview = frame_named(b.page, "cockpit1:localhost/system")
    wait_for(lambda: re.search(r"Health|System information|Usage", overview.inner_text("body")), 30,
             what="Cockpit's Overview")
    b.step("overview")
    assert re.search(r"cgbterm", b.page.inner_text("body")), b.text()  # the shell names the account
    frame = open_terminal(b, site)
    run_in_terminal(b, frame, "cgbterm", marker_dir)
    # what cockpit-ws received: one bearer login, accepted by certgate-cockpit-auth for this account
    lines = cockpit.auth_lines()[before:]
    assert any("cgbterm" in ln for ln in lines), cockpit.report()
    assert site.audit_has(event="login", decision="partial", account="cgbterm") or \
        site.audit_has(event="cockpit-login", decision="challenge", account="cgbterm"), site.report()
    assert site.audit_has(event="session", decision="open", account="cgbterm"), site.report()


def test_cn_mismatch_and_wrong_totp_never_reach_cockpit_ws(scene: Scene, cockpit: CockpitSite,
                                                          accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    before = len(cockpit.auth_lines())
    # a valid certificate of another person, typing cgbwrong's account and password
    b = scene.browser("other", "cgbother")
    page = b.page
    page.goto(site.url("/"))
    page.wait_for_selector("#login-user-input", state="visible")
    page.fill("#login-user-input", "cgbwrong")
    page.fill("#login-password-input", PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("#login-error-message", state="visible")
    b.step("cn mismatch refused")
    assert page.inner_text("#login-error-message").strip(), b.text()
    assert site.audit_has(event="login", account="cgbwrong", reason="cn-mismatch"), site.report()
    # the right certificate and password, a wrong code
    b2 = scene.browser("person", "cgbwrong")
    page = b2.page
    page.goto(site.url("/"))
    page.wait_for_selector("#login-user-input", state="visible")
    page.fill("#login-user-input", "cgbwrong")
    page.fill("#login-password-input", PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("#conversation-input", state="visible")
    page.fill("#conversation-input", accounts.wrong_code("cgbwrong"))
    page.click("#login-button")
    page.wait_for_selector("#login-error-message", state="visible")
    b2.step("wrong code refused")
    assert page.inner_text("#login-error-message").strip(), b2.text()
    assert site.audit_has(event="login", account="cgbwrong", reason="bad-totp"), site.report()
    assert cockpit.auth_lines()[before:] == []  # cockpit-ws never started its auth command


def test_card_in_keeps_the_session_for_several_graces(scene: Scene, cockpit: CockpitSite, accounts: Accounts,
                                                      marker_dir: Path) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", "cgbcardin")
    socks = Sockets(b.page)
    cockpit_login(b, site, accounts, "cgbcardin")
    frame = open_terminal(b, site)
    held = 4 * GRACE
    hold(b.page, held, lambda: socks.closed or "/.certgate/" in b.page.url,
         "the session ended while the card was in")
    b.step(f"after {held:.0f} s with the card in")
    scene.timing(f"card in: session kept (>= 4 x grace = {held:.0f} s)", held)
    run_in_terminal(b, frame, "cgbcardin", marker_dir)
    assert not site.audit_has(event="session", decision="end", account="cgbcardin"), site.report()


def test_card_out_ends_the_session_at_grace(scene: Scene, cockpit: CockpitSite, accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", "cgbcardout")
    socks = Sockets(b.page)
    cockpit_login(b, site, accounts, "cgbcardout")
    open_terminal(b, site)
    b.card.pull()
    t = Timer()
    b.step("card pulled")
    wait_for(lambda: (pump(b.page), socks.all_closed())[1], GRACE + 4 * PRESENCE + 10, interval=0.2,
             what="Cockpit's WebSocket to close after the card was pulled")
    ws_closed = max(socks.closed.values()) - (socks.timer() - t())
    scene.timing("card out -> WebSocket closed", ws_closed)
    wait_for(lambda: (pump(b.page), "/.certgate/login" in b.page.url)[1], 2 * PRESENCE + 10, interval=0.2,
             what="the page to go to certgate's login page")
    scene.timing("card out -> page says the certificate is needed", t())
    b.page.wait_for_load_state()
    b.step("certificate needed again")
    text = b.text()
    assert re.search(r"certificate", text, re.I) and "smart card" in text.lower(), text
    assert site.audit_has(event="session", decision="end", account="cgbcardout"), site.report()
    # not before grace after the last proof: the last proof was at most one presence interval before the pull
    assert ws_closed >= GRACE - 2 * PRESENCE - 1, ws_closed
    assert ws_closed <= GRACE + 2 * PRESENCE + 2, ws_closed


def test_long_trusted_session_lasts_long_grace(scene: Scene, cockpit: CockpitSite, accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", "cgblong")
    socks = Sockets(b.page)
    cockpit_login(b, site, accounts, "cgblong")
    activate = ("() => fetch('/.certgate/api/trusted-session', {method: 'POST', credentials: 'same-origin', "
                "headers: {'Accept': 'application/json'}}).then(r => r.status)")
    wait_for(lambda: b.page.evaluate(activate) == 200, 15, interval=0.5, what="the long trusted session to activate")
    assert site.audit_has(event="session", reason="long-session-activated", account="cgblong"), site.report()
    b.card.pull()
    t = Timer()
    hold(b.page, GRACE + 2 * PRESENCE + 2, lambda: socks.closed or "/.certgate/" in b.page.url,
         "a long trusted session ended at the normal grace")
    b.step("past grace, still in")
    wait_for(lambda: (pump(b.page), socks.all_closed())[1], LONG_GRACE + 4 * PRESENCE + 10, interval=0.2,
             what="the WebSocket to close at long_grace")
    ended = max(socks.closed.values()) - (socks.timer() - t())
    scene.timing(f"long session: card out -> WebSocket closed (long_grace {LONG_GRACE:.0f} s)", ended)
    assert LONG_GRACE - 2 * PRESENCE - 1 <= ended <= LONG_GRACE + 2 * PRESENCE + 2, ended
    wait_for(lambda: (pump(b.page), "/.certgate/login" in b.page.url)[1], 2 * PRESENCE + 10, interval=0.2,
             what="the page to go to certgate's login page")
    b.step("long session over")


def test_logout_then_login_again(scene: Scene, cockpit: CockpitSite, accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", "cgblogout")
    page = b.page
    cockpit_login(b, site, accounts, "cgblogout")
    page.click("#toggle-menu")
    b.step("session menu")
    page.click("#logout")
    t = Timer()
    wait_for(lambda: (pump(page), site.audit_has(event="session", decision="end", reason="cockpit-logout",
                                                account="cgblogout"))[1],
             15, what="certgate to see Cockpit's logout")
    page.wait_for_load_state()
    wait_for_login_form(page)
    b.step("landed after logout")
    scene.timing("Cockpit logout -> login form shown", t())
    # log in again from where the person landed
    secs = cockpit_login(b, site, accounts, "cgblogout", path=None)
    scene.timing("login again after logout", secs)
    assert "cgblogout" in page.inner_text("body")


def test_bookmark_to_a_deep_path(scene: Scene, cockpit: CockpitSite, accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", "cgbdeep")
    page = b.page
    deep = "/system/services"
    cockpit_login(b, site, accounts, "cgbdeep", path=deep)
    wait_for(lambda: page.url.endswith(deep) or (pump(page), False)[1], 20, what=f"the shell at {deep}")
    frame_named(page, "cockpit1:localhost/system/services")
    b.step("back at the bookmarked path")
    assert page.url == site.url(deep)
