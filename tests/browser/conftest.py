"""Fixtures of the browser suite: Playwright, the certificate policy, the PKI, local accounts,
and ``scene`` (browsers of one test, screenshots, and a failure report).

A failing test prints, for every browser, the page text, and for every certgate it ran
against, the log tail and the audit lines. Screenshots go to ``tests/browser/out/<test>/``
(git-ignored). Timings recorded with ``scene.timing(...)`` are printed at the end of the run
and written to ``tests/browser/out/timings.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness.accounts import Accounts
from tests.harness.chromium import Browser, CertPolicy, find_chromium
from tests.harness.gateway import DemoUpstream, Site
from tests.harness.pki import Pki
from tests.harness.smartcard import check_tools

OUT = Path(__file__).resolve().parent / "out"
TIMINGS: list[tuple[str, str, float]] = []

# One local account per scenario (CN == account), so that TOTP steps and throttling never
# interfere; the names carry this run's pid, so that runs in parallel never share an account.
RUN = f"{os.getpid():x}"


def account(role: str) -> str:
    return f"cgb{role}{RUN}"


U_TERM, U_CARDIN, U_CARDOUT, U_LONG, U_LOGOUT, U_DEEP, U_WRONG = COCKPIT_ACCOUNTS = tuple(
    account(r) for r in ("term", "cardin", "cardout", "long", "logout", "deep", "wrong"))
U_PAGE, U_LOCKED = PAGE_ACCOUNTS = (account("page"), account("locked"))
U_OTHER = account("other")  # a valid certificate whose CN is no account in use


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("browser suite timings (seconds)")
    for test, what, secs in TIMINGS:
        terminalreporter.write_line(f"{test:<48} {what:<44} {secs:7.2f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "timings.json").write_text(json.dumps([{"test": t, "what": w, "seconds": s} for t, w, s in TIMINGS],
                                                 indent=1) + "\n")


@pytest.fixture(scope="package")
def playwright() -> Iterator[Any]:
    find_chromium()
    check_tools()
    from playwright.sync_api import sync_playwright

    policy = CertPolicy()
    policy.install()
    pw = sync_playwright().start()
    pw.certgate_policy = policy  # type: ignore[attr-defined]
    try:
        yield pw
    finally:
        pw.stop()
        policy.remove()


@pytest.fixture(scope="package")
def bpki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """CA, server certificate (127.0.0.1) and one client certificate per account."""
    return Pki(tmp_path_factory.mktemp("browser-pki"), clients=COCKPIT_ACCOUNTS + PAGE_ACCOUNTS + (U_OTHER,))


@pytest.fixture(scope="package")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Accounts]:
    acc = Accounts(tmp_path_factory.mktemp("browser-accounts"), COCKPIT_ACCOUNTS + PAGE_ACCOUNTS)
    try:
        yield acc.create(totp=COCKPIT_ACCOUNTS + PAGE_ACCOUNTS)
    finally:
        acc.remove()


class Scene:
    """The browsers and certgates of one test."""

    def __init__(self, name: str, playwright: Any, pki: Pki, tmp: Path) -> None:
        self.name = name
        self.playwright = playwright
        self.pki = pki
        self.tmp = tmp
        self.out = OUT / name
        shutil.rmtree(self.out, ignore_errors=True)
        self.browsers: list[Browser] = []
        self.sites: list[Site] = []
        self.extra_reports: list[Any] = []

    def browser(self, label: str, cert: str | None = None, *, rogue: bool = False) -> Browser:
        """A fresh Chromium whose card holds ``cert``'s certificate (a CN of the PKI), a rogue CA's
        certificate of that CN with ``rogue=True``, or no card at all."""
        b = Browser(self.playwright, self.tmp / f"home-{label}", self.out, label, self.playwright.certgate_policy)
        self.browsers.append(b)
        if cert is None:
            return b.launch(self.pki.ca_path)
        cc = self.pki.rogue_client(cert) if rogue else self.pki.client(cert)
        return b.launch(self.pki.ca_path, cc.cert_path, cc.key_path)

    def watch(self, site: Site) -> Site:
        if site not in self.sites:
            self.sites.append(site)
        return site

    def timing(self, what: str, seconds: float) -> None:
        TIMINGS.append((self.name, what, round(seconds, 2)))
        print(f"TIMING {self.name}: {what} = {seconds:.2f} s")

    def report(self) -> str:
        parts = []
        for b in self.browsers:
            url = "-"
            try:
                url = b.page.url if b.page is not None else "-"
            except Exception:
                pass
            parts.append(f"--- browser {b.name}: {url} ---\n{b.text()[:3000] if b.page is not None else ''}")
        parts += [s.report() for s in self.sites]
        parts += [r() for r in self.extra_reports]
        return "\n".join(parts)

    def close(self) -> None:
        for b in self.browsers:
            b.close()


@pytest.fixture
def scene(request: pytest.FixtureRequest, playwright: Any, bpki: Pki, tmp_path: Path) -> Iterator[Scene]:
    s = Scene(request.node.name, playwright, bpki, tmp_path)
    try:
        yield s
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for b in s.browsers:
                if b.page is not None:
                    b.step("at-failure")
            print(s.report())
        s.close()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoUpstream]:
    """`certgate demo-upstream` (shows the headers it got), one per test module."""
    up = DemoUpstream(tmp_path_factory.mktemp("demo-upstream"))
    yield up
    up.stop()
