"""A person in Chromium using a REAL cockpit-ws behind certgate, with the card on a software
smart card: Cockpit's own login page (account, password, then the TOTP code asked through
X-Conversation), the Overview, a Terminal command running as that account; refusals that
cockpit-ws never sees; the session kept while the card is in, ended at ``grace`` once it is
out (``long_grace`` after activating a long trusted session); Cockpit's Logout; a bookmark.

certgate runs the configuration docs/cockpit.md's Setup gives (read from that file; only its
paths, addresses and ports replaced by the test's own) with only ``grace``/``long_grace``
shortened; everything else, presence included, is at its default for ``kind = cockpit``.
"""

from __future__ import annotations

import configparser
import pwd
import re
import secrets
import shutil
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.harness.pki import Pki
from tests.harness.wait import Timer, wait_for
from tests.browser.conftest import U_CARDIN, U_CARDOUT, U_DEEP, U_LOGOUT, U_LONG, U_OTHER, U_TERM, U_WRONG, Scene
from tests.harness.accounts import Accounts, gateway_config, PASSWORD
from tests.harness.chromium import Browser
from tests.harness.cockpit import cockpit_auth_ws
from tests.harness.cockpit_ws import CockpitWs
from tests.harness.gateway import Site

GRACE = 6.0  # [sessions] grace (default 300 s)
LONG_GRACE = 16.0  # [sessions] long_grace (default 3600 s)
PRESENCE = GRACE / 4  # [sessions] presence_interval: not set, its default for this grace
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cockpit.md"
# keys naming this installation's files, addresses and ports: the test's own replace them
INSTALL_KEYS = {("listen", "address"), ("listen", "port"), ("listen", "certificate"), ("listen", "key"),
                ("trust", "store"), ("upstream", "url"), ("login", "password_file"), ("login", "totp_secrets"),
                ("login", "totp_key"), ("login", "secret_key"), ("sessions", "store"), ("audit", "file")}


def documented_config() -> dict[str, dict[str, object]]:
    """The certgate.conf of docs/cockpit.md's Setup (step 4), without its installation paths."""
    text = DOCS.read_text()
    at = text.index("4. certgate.conf")
    start = text.index("```ini\n", at) + len("```ini\n")
    block = textwrap.dedent(text[start:text.index("```", start)])
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    cp.read_string(block)
    out: dict[str, dict[str, object]] = {}
    for sec in cp.sections():
        for key, value in cp.items(sec):
            if (sec, key) not in INSTALL_KEYS:
                out.setdefault(sec, {})[key] = value
    return out


COCKPIT_SECTIONS = documented_config()
COCKPIT_SECTIONS.setdefault("sessions", {}).update(grace=GRACE, long_grace=LONG_GRACE)  # only times shortened
assert COCKPIT_SECTIONS["upstream"]["kind"] == "cockpit", COCKPIT_SECTIONS


class CockpitSite:
    def __init__(self, site: Site, ws: CockpitWs) -> None:
        self.site, self.ws = site, ws

    def auth_lines(self) -> list[str]:
        """certgate-cockpit-auth's decision lines in cockpit-ws's log (what cockpit-ws let in)."""
        return [ln for ln in self.ws.log().splitlines() if "certgate-cockpit-auth[" in ln]

    def report(self) -> str:
        return "--- cockpit-ws log tail ---\n" + "\n".join(self.ws.log().splitlines()[-30:])


@contextmanager
def cockpit_site(folder: Path, pki: Pki, accounts: Accounts, sections: Any, name: str) -> Iterator[CockpitSite]:
    """cockpit-ws with certgate's auth command, and a certgate in front of it (``sections``), sharing
    one secret and one SQLite session store in ``folder``; both stopped on exit."""
    secret = folder / "certgate.secret"
    store = f"sqlite:{folder / 'sessions.db'}"
    with cockpit_auth_ws(folder / "cockpit-auth", secret=secret, store=store) as ws:
        cfg = gateway_config(folder / "gw", pki, accounts, upstream=ws.base_url, sections=sections,
                             secret=secret, store=store)
        site = Site(cfg, name).start()
        try:
            yield CockpitSite(site, ws)
        finally:
            site.stop()


@pytest.fixture(scope="module")
def cockpit(tmp_path_factory: pytest.TempPathFactory, bpki: Pki, accounts: Accounts) -> Iterator[CockpitSite]:
    with cockpit_site(tmp_path_factory.mktemp("cockpit-site"), bpki, accounts, COCKPIT_SECTIONS, "cockpit-gw") as c:
        yield c


def watch(scene: Scene, cockpit: CockpitSite) -> Site:
    scene.extra_reports.append(cockpit.report)
    return scene.watch(cockpit.site)


_SOCKET_SPY = """
(() => {
  const Real = window.WebSocket;
  if (!Real || Real.__certgateSpy) { return; }
  const log = (kind, url) => {
    try {
      const all = JSON.parse(sessionStorage.getItem("certgate-spy") || "[]");
      all.push({kind: kind, url: url, t: Date.now() / 1000});
      sessionStorage.setItem("certgate-spy", JSON.stringify(all));
    } catch (e) { /* storage unavailable: nothing recorded */ }
  };
  function Spy(url, protocols) {
    const ws = protocols === undefined ? new Real(url) : new Real(url, protocols);
    log("open", String(url));
    ws.addEventListener("close", (ev) => log("close:" + ev.code, String(url)));
    return ws;
  }
  Spy.prototype = Real.prototype;
  Object.assign(Spy, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3, __certgateSpy: true});
  window.WebSocket = Spy;
})();
"""


class Sockets:
    """Cockpit's WebSockets in one tab, as the page saw them: every open and close is written by a
    small script (added to each document) into the tab's sessionStorage, which outlives the
    navigation to the login page. Times are epoch seconds."""

    def __init__(self, page: Any) -> None:
        self.page = page
        page.context.add_init_script(_SOCKET_SPY)

    def events(self) -> list[dict[str, Any]]:
        try:
            return [e for e in self.page.evaluate("JSON.parse(sessionStorage.getItem('certgate-spy') || '[]')")
                    if "/cockpit/socket" in e["url"]]
        except Exception:
            return []

    def __repr__(self) -> str:
        return f"Sockets({self.events()})"

    def closed_since(self, t0: float) -> float | None:
        """Seconds from ``t0`` (epoch) to the first close of a socket after it, or None."""
        closes = [e["t"] for e in self.events() if e["kind"].startswith("close") and e["t"] >= t0]
        return round(min(closes) - t0, 2) if closes else None


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
    if page.locator("#login-again").is_visible():  # Cockpit after its Logout: "Login again"
        b.step("cockpit logout successful")
        page.click("#login-again")
        page.locator("#login-user-input").wait_for(state="visible", timeout=20000)
    if page.locator("form[action='/.certgate/login']").count():
        b.step("certgate login page")
        b.login_pages.append("certgate")
        certgate_page_login(b, accounts, account)
    else:
        b.step("cockpit login page")
        b.login_pages.append("cockpit")
        page.fill("#login-user-input", account)
        page.fill("#login-password-input", PASSWORD)
        page.click("#login-button")
        if code:
            page.wait_for_selector("#conversation-input", state="visible")
            prompt = page.inner_text("#conversation-prompt")
            assert "Authenticator code" in prompt, prompt
            b.step("totp asked through x-conversation")
            b.doc_shot(page.locator("#main"), "cockpit-totp-prompt.png")
            page.fill("#conversation-input", accounts.code(account))
            page.click("#login-button")
    wait_for_shell(page)
    secs = t()
    b.step("cockpit shell")
    return secs


def wait_for_login_form(page: Any) -> None:
    """Until Cockpit's login form or certgate's is visible."""
    forms = page.locator("#login-user-input").or_(page.locator("form[action='/.certgate/login']")).or_(
        page.locator("#login-again"))
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
    """Cockpit's page frame ``cockpit1:localhost/<path>`` (by name, or by its document URL:
    a frame's name is read when it attaches, and Cockpit may name it later)."""
    path = prefix.split("cockpit1:localhost/", 1)[1]
    doc = "/cockpit/@localhost/" + (path if "/" in path else path + "/index")
    # cockpit-ws may serve a package by checksum instead: /cockpit/$<checksum>/<path>.html
    by_checksum = re.compile(r"/cockpit/\$[0-9a-f]+/" + re.escape(path if "/" in path else path + "/index"))

    def find() -> Any:
        # the iframe element's current name first (Playwright's Frame.name is read once, at attach)
        for sel in (f"iframe[name='{prefix}']", f"iframe[name^='{prefix}#']"):
            el = page.query_selector(sel)
            fr = el.content_frame() if el is not None else None
            if fr is not None:
                return fr
        for f in page.frames:
            if f.name == prefix or f.name.startswith(prefix + "#") or doc in f.url or by_checksum.search(f.url):
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
    b.doc_shot(b.page.locator("iframe[name='cockpit1:localhost/system/terminal']"), "cockpit-terminal.png")
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
    b = scene.browser("person", U_TERM)
    before = len(cockpit.auth_lines())
    secs = cockpit_login(b, site, accounts, U_TERM)
    scene.timing("Cockpit login (page, password, TOTP, shell)", secs)
    overview = frame_named(b.page, "cockpit1:localhost/system")
    wait_for(lambda: re.search(r"Health|System information|Usage", overview.inner_text("body")), 30,
             what="Cockpit's Overview")
    b.step("overview")
    assert U_TERM in b.page.inner_text("body"), b.text()  # the shell names the account
    frame = open_terminal(b, site)
    run_in_terminal(b, frame, U_TERM, marker_dir)
    # what cockpit-ws received: one bearer login, accepted by certgate-cockpit-auth for this account
    lines = cockpit.auth_lines()[before:]
    assert any(U_TERM in ln for ln in lines), cockpit.report()
    assert site.audit_has(event="login", decision="partial", account=U_TERM) or \
        site.audit_has(event="cockpit-login", decision="challenge", account=U_TERM), site.report()
    assert site.audit_has(event="session", decision="open", account=U_TERM), site.report()


def submit_cockpit_form(page: Any, url: str, account: str, password: str) -> None:
    """Open ``url``, wait for Cockpit's login form, type ``account`` and ``password`` and submit."""
    page.goto(url)
    page.wait_for_selector("#login-user-input", state="visible")
    page.fill("#login-user-input", account)
    page.fill("#login-password-input", password)
    page.click("#login-button")


def test_cn_mismatch_and_wrong_totp_never_reach_cockpit_ws(scene: Scene, cockpit: CockpitSite,
                                                          accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    before = len(cockpit.auth_lines())
    # a valid certificate of another person, typing another account and password
    b = scene.browser("other", U_OTHER)
    page = b.page
    submit_cockpit_form(page, site.url("/"), U_WRONG, PASSWORD)
    page.wait_for_selector("#login-error-message", state="visible")
    b.step("cn mismatch refused")
    assert "does not belong to the account you entered" in page.inner_text("#login-error-message"), b.text()
    assert site.audit_has(event="login", account=U_WRONG, reason="cn-mismatch"), site.report()
    # the right certificate and password, a wrong code
    b2 = scene.browser("person", U_WRONG)
    page = b2.page
    submit_cockpit_form(page, site.url("/"), U_WRONG, PASSWORD)
    page.wait_for_selector("#conversation-input", state="visible")
    page.fill("#conversation-input", accounts.wrong_code(U_WRONG))
    page.click("#login-button")
    page.wait_for_selector("#login-error-message", state="visible")
    b2.step("wrong code refused")
    assert "Authentication failed" in page.inner_text("#login-error-message"), b2.text()
    assert page.locator("#login-user-input").is_visible()  # back at the form: the person can try again
    assert site.audit_has(event="login", account=U_WRONG, reason="bad-totp"), site.report()
    assert cockpit.auth_lines()[before:] == []  # cockpit-ws never started its auth command


def test_card_in_keeps_the_session_for_several_graces(scene: Scene, cockpit: CockpitSite, accounts: Accounts,
                                                      marker_dir: Path) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", U_CARDIN)
    socks = Sockets(b.page)
    cockpit_login(b, site, accounts, U_CARDIN)
    frame = open_terminal(b, site)
    t0 = time.time()
    held = 4 * GRACE
    hold(b.page, held, lambda: socks.closed_since(t0) is not None or "/.certgate/" in b.page.url,
         "the session ended while the card was in")
    b.step(f"after {held:.0f} s with the card in")
    scene.timing(f"card in: session kept (>= 4 x grace = {held:.0f} s)", held)
    run_in_terminal(b, frame, U_CARDIN, marker_dir)
    assert not site.audit_has(event="session", decision="end", account=U_CARDIN), site.report()


def test_card_out_ends_the_session_at_grace(scene: Scene, cockpit: CockpitSite, accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", U_CARDOUT)
    socks = Sockets(b.page)
    cockpit_login(b, site, accounts, U_CARDOUT)
    open_terminal(b, site)
    b.card.pull()
    t0 = time.time()
    b.step("card pulled")
    ws_closed = wait_for(lambda: socks.closed_since(t0), GRACE + 4 * PRESENCE + 10, interval=0.2,
                         what=f"Cockpit's WebSocket to close after the card was pulled: {socks}")
    scene.timing("card out -> WebSocket closed", ws_closed)
    wait_for(lambda: (pump(b.page), "/.certgate/login" in b.page.url)[1], 2 * PRESENCE + 10, interval=0.2,
             what="the page to go to certgate's login page")
    scene.timing("card out -> page says the certificate is needed", time.time() - t0)
    b.page.wait_for_load_state()
    b.step("certificate needed again")
    b.doc_shot(b.page.locator("main"), "certificate-needed-again.png")
    text = b.text()
    assert re.search(r"certificate", text, re.I) and "smart card" in text.lower(), text
    assert site.audit_has(event="session", decision="end", account=U_CARDOUT), site.report()
    # not before grace after the last proof: the last proof was at most one presence interval before the pull
    assert ws_closed >= GRACE - 2 * PRESENCE - 1, ws_closed
    assert ws_closed <= GRACE + 2 * PRESENCE + 2, ws_closed


def test_long_trusted_session_lasts_long_grace(scene: Scene, cockpit: CockpitSite, accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", U_LONG)
    socks = Sockets(b.page)
    cockpit_login(b, site, accounts, U_LONG)
    activate = ("() => fetch('/.certgate/api/trusted-session', {method: 'POST', credentials: 'same-origin', "
                "headers: {'Accept': 'application/json'}}).then(r => r.status)")
    wait_for(lambda: b.page.evaluate(activate) == 200, 15, interval=0.5, what="the long trusted session to activate")
    assert site.audit_has(event="session", reason="long-session-activated", account=U_LONG), site.report()
    b.card.pull()
    t0 = time.time()
    hold(b.page, GRACE + 2 * PRESENCE + 2, lambda: socks.closed_since(t0) is not None or "/.certgate/" in b.page.url,
         "a long trusted session ended at the normal grace")
    b.step("past grace, still in")
    ended = wait_for(lambda: socks.closed_since(t0), LONG_GRACE + 4 * PRESENCE + 10, interval=0.2,
                     what=f"the WebSocket to close at long_grace: {socks}")
    scene.timing(f"long session: card out -> WebSocket closed (long_grace {LONG_GRACE:.0f} s)", ended)
    assert LONG_GRACE - 2 * PRESENCE - 1 <= ended <= LONG_GRACE + 2 * PRESENCE + 2, ended
    wait_for(lambda: (pump(b.page), "/.certgate/login" in b.page.url)[1], 2 * PRESENCE + 10, interval=0.2,
             what="the page to go to certgate's login page")
    b.step("long session over")


def test_logout_then_login_again(scene: Scene, cockpit: CockpitSite, accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", U_LOGOUT)
    page = b.page
    cockpit_login(b, site, accounts, U_LOGOUT)
    page.click("#toggle-menu")
    b.step("session menu")
    page.click("#logout")
    t = Timer()
    wait_for(lambda: (pump(page), site.audit_has(event="session", decision="end", reason="cockpit-logout",
                                                account=U_LOGOUT))[1],
             15, what="certgate to see Cockpit's logout")
    page.wait_for_load_state()
    wait_for_login_form(page)
    b.step("landed after logout")
    scene.timing("Cockpit logout -> login form shown", t())
    # log in again from where the person landed
    secs = cockpit_login(b, site, accounts, U_LOGOUT, path=None)
    scene.timing("login again after logout", secs)
    assert U_LOGOUT in page.inner_text("body")
    opened = [e for e in site.audit() if e.get("event") == "session" and e.get("decision") == "open"
              and e.get("account") == U_LOGOUT]
    assert b.login_pages == ["cockpit", "cockpit"]  # after Logout too: Cockpit's own page
    assert len(opened) == 2, site.report()  # one session per login; the first ended with the logout
    assert sum(f"accepted account={U_LOGOUT}" in ln for ln in cockpit.auth_lines()) == 2, cockpit.report()


def test_bookmark_to_a_deep_path(scene: Scene, cockpit: CockpitSite, accounts: Accounts) -> None:
    site = watch(scene, cockpit)
    b = scene.browser("person", U_DEEP)
    page = b.page
    deep = "/system/services"
    cockpit_login(b, site, accounts, U_DEEP, path=deep)
    wait_for(lambda: page.url.endswith(deep) or (pump(page), False)[1], 20, what=f"the shell at {deep}")
    frame_named(page, "cockpit1:localhost/system/services")
    b.step("back at the bookmarked path")
    assert page.url == site.url(deep)
    assert b.login_pages == ["cockpit"]  # Cockpit's own login page, at the bookmarked path
    assert any(f"accepted account={U_DEEP}" in ln for ln in cockpit.auth_lines()), cockpit.report()
