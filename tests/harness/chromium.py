"""Debian's Chromium driven by Playwright, each browser with its own profile, HOME, NSS
database and software smart card (:mod:`tests.harness.smartcard`).

- :func:`find_chromium`: the system browser (never ``playwright install``); a RuntimeError
  naming the package when it is missing.
- :class:`CertPolicy`: the managed policy ``AutoSelectCertificateForUrls`` that lets Chromium
  present the card's certificate without a dialog (patterns ``https://127.0.0.1:*`` and
  ``https://localhost:*``, issuer CN
  filter on the test CA). One file of a fixed name, the same content for every run; removed
  when the suite ends.
- :class:`Browser`: one running Chromium; :meth:`Browser.step` writes a numbered screenshot
  into the test's output folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from tests.harness.smartcard import SmartCard

CHROMIUM = "/usr/bin/chromium"
CA_CN = "certgate test CA"  # tests.harness.pki.Pki's CA (and its rogue twin of the same name)
POLICY_DIR = Path("/etc/chromium/policies/managed")
POLICY_FILE = POLICY_DIR / "certgate-browser-tests.json"
DOC_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def find_chromium() -> str:
    """The system Chromium; RuntimeError naming the package when it is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} not found (apt-get install chromium); the browser suite drives the real one")
    return CHROMIUM


class CertPolicy:
    """Writes (and later removes) the Chromium managed policy selecting the test CA's certificates.

    Several runs of the suite may share the machine: each registers its pid under ``USERS``, and
    the policy file is removed only by the last live run (Chromium watches the folder, so a
    removal would reach browsers that are still running). ``ensure`` rewrites a file another
    process removed."""

    USERS = POLICY_DIR.parent / "certgate-browser-tests.users"

    def __init__(self) -> None:
        # localhost too: WebAuthn needs a host name as relying-party id (tests/browser/test_webauthn.py).
        # Runs share this file; a run whose text differs rewrites it (ensure), so every copy of the
        # suite must write the same rules.
        rules = [{"pattern": f"https://{host}:*", "filter": {"ISSUER": {"CN": CA_CN}}} for host in ("127.0.0.1",
                                                                                                  "localhost")]
        self.text = json.dumps({"AutoSelectCertificateForUrls": [json.dumps(r) for r in rules]}, indent=1) + "\n"
        self.me = self.USERS / str(os.getpid())

    def install(self) -> None:
        try:
            self.USERS.mkdir(parents=True, exist_ok=True)
            self.me.touch()
            self.ensure()
        except OSError as e:
            raise RuntimeError(f"cannot write the Chromium policy {POLICY_FILE}: {e} (the browser suite runs as "
                               "root so that Chromium presents the test certificate without a dialog)") from e

    def ensure(self) -> None:
        POLICY_DIR.mkdir(parents=True, exist_ok=True)
        try:
            if POLICY_FILE.read_text() == self.text:
                return
        except OSError:
            pass
        tmp = POLICY_FILE.with_name(f".{POLICY_FILE.name}.{os.getpid()}")
        tmp.write_text(self.text)
        tmp.replace(POLICY_FILE)

    def remove(self) -> None:
        self.me.unlink(missing_ok=True)
        for other in self.USERS.glob("*"):
            try:
                os.kill(int(other.name), 0)
                return  # another run still uses the policy
            except (ValueError, ProcessLookupError):
                other.unlink(missing_ok=True)
            except PermissionError:
                return
        POLICY_FILE.unlink(missing_ok=True)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "step"


class Browser:
    """One Chromium process with a fresh profile and a private HOME (NSS database, card)."""

    def __init__(self, playwright: Any, home: Path, out: Path, name: str, policy: CertPolicy) -> None:
        self.playwright = playwright
        self.policy = policy
        self.home = Path(home)
        self.out = Path(out)
        self.name = name
        self.card = SmartCard(self.home)
        self.context: Any = None
        self.page: Any = None
        self.steps = 0
        self.login_pages: list[str] = []  # which login page each login went through

    def launch(self, ca_pem: Path, cert: Path | None = None, key: Path | None = None) -> "Browser":
        """Set up the NSS database (trusting ``ca_pem``), the card when ``cert``/``key`` are given,
        and start Chromium headless with its own ``--user-data-dir``."""
        exe = find_chromium()
        self.policy.ensure()
        self.home.mkdir(parents=True, exist_ok=True)
        self.card.setup(ca_pem, cert, key)
        profile = self.home / "profile"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PLAYWRIGHT"))}
        env.update(self.card.env)
        self.context = self.playwright.chromium.launch_persistent_context(
            str(profile), executable_path=exe, headless=True, args=FLAGS, env=env,
            viewport={"width": 1100, "height": 720}, timeout=30000)
        self.context.set_default_timeout(20000)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        return self

    def step(self, what: str) -> Path:
        """Screenshot of the current page as ``NN-what.png`` in the output folder."""
        self.steps += 1
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"{self.name}-{self.steps:02d}-{slug(what)}.png"
        try:
            self.page.screenshot(path=str(path), timeout=10000)
        except Exception as e:  # a crashed page still lets the test say what it saw
            path.with_suffix(".txt").write_text(f"screenshot failed: {e}\n")
        return path

    def doc_shot(self, locator: Any, name: str) -> None:
        """With ``CERTGATE_DOC_IMAGES=1`` in the environment: a screenshot of ``locator`` (one
        element, CSS pixels) as ``docs/img/<name>`` for the README; it must stay under 60 KB."""
        if os.environ.get("CERTGATE_DOC_IMAGES") != "1":
            return
        path = DOC_IMAGES / name
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(path), scale="css", animations="disabled", timeout=10000)
        assert path.stat().st_size < 60_000, f"{path} is {path.stat().st_size} bytes (keep README images small)"

    def text(self) -> str:
        """The visible text of the page (and of its frames), for assertions and failure reports."""
        parts = []
        try:
            for frame in self.page.frames:
                try:
                    parts.append(frame.inner_text("body", timeout=2000))
                except Exception:
                    pass
        except Exception as e:
            parts.append(f"(page unavailable: {e})")
        return "\n".join(parts)

    def close(self) -> None:
        if self.context is not None:
            try:
                self.context.close()
            except Exception:
                pass
            self.context = None
        shutil.rmtree(self.home, ignore_errors=True)
