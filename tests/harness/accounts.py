"""Real local accounts for the browser suite: a password (the Cockpit bridge runs as them),
certgate's password file, TOTP secrets, and the gateway config that uses them.

:class:`Accounts` creates the accounts once per suite (``useradd``, needs root) and removes
the ones it created. TOTP codes are single-use per time step: :meth:`Accounts.code` hands out
a code for a step certgate has not seen yet, waiting for the clock when needed.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterable, Mapping

import pyotp

from proxy.login.passwords import set_password
from proxy.login.totp import TotpSecrets
from tests.harness.config import overlay, write_config
from tests.harness.pki import Pki
from tests.harness.wait import wait_for

PASSWORD = "correct horse battery"


class Accounts:
    """Local accounts with a password (the bridge runs as them), certgate's password file and
    TOTP secrets. Created once per suite; removed at the end."""

    def __init__(self, folder: Path, names: Iterable[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names = list(names)
        self.passwd = self.folder / "passwd"
        self.totp_path, self.totp_key = self.folder / "totp", self.folder / "totp.key"
        self.secrets: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self.created: list[str] = []

    def create(self, *, totp: Iterable[str]) -> "Accounts":
        """Add the accounts (``useradd``, needs root) with :data:`PASSWORD`, in certgate's
        password file too, and a TOTP secret for each of ``totp``."""
        if os.geteuid() != 0:
            raise RuntimeError("the browser suite creates local accounts for Cockpit (useradd): run it as root")
        store = TotpSecrets(self.totp_path, self.totp_key)
        for name in self.names:
            if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True,
                               capture_output=True, timeout=30)
                self.created.append(name)
            subprocess.run(["chpasswd"], input=f"{name}:{PASSWORD}\n".encode(), check=True, capture_output=True,
                           timeout=30)
            set_password(self.passwd, name, PASSWORD, n=2 ** 10, r=1)
        for name in totp:
            self.secrets[name] = pyotp.random_base32()
            store.store(name, self.secrets[name], 0.0)
        return self

    def remove(self) -> None:
        """Delete the local accounts :meth:`create` added (and their homes)."""
        for name in self.created:  # cockpit-ws's process group (the bridges) is gone by now
            subprocess.run(["userdel", "--remove", "--force", name], capture_output=True, timeout=30)

    def code(self, account: str) -> str:
        """A TOTP code certgate has not yet accepted for ``account`` (codes are single-use per time
        step: the next step's code is used, within the window, or the clock is awaited)."""
        totp = pyotp.TOTP(self.secrets[account])
        step = max(int(time.time() // 30), self._last_step.get(account, -1) + 1)
        wait_for(lambda: step <= int(time.time() // 30) + 1, 35, what="a fresh TOTP time step")
        self._last_step[account] = step
        return totp.at(step * 30)

    def wrong_code(self, account: str) -> str:
        """A well-formed code that is wrong for every step in the window."""
        totp = pyotp.TOTP(self.secrets[account])
        now = int(time.time() // 30)
        valid = {totp.at((now + d) * 30) for d in (-2, -1, 0, 1, 2)}
        return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in valid)


def gateway_config(folder: Path, pki: Pki, accounts: Accounts, *, upstream: str,
                   sections: Mapping[str, Mapping[str, object]], secret: Path | None = None,
                   store: str | None = None) -> Path:
    """A certgate config for the browser suite (:func:`tests.harness.config.write_config` with
    the accounts' password file and TOTP secrets, a SQLite store and an audit file);
    ``sections`` override or add keys."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = overlay({
        "login": {"password": "file", "password_file": accounts.passwd, "totp_secrets": accounts.totp_path,
                  "totp_key": accounts.totp_key, "secret_key": secret or folder / "certgate.secret"},
        "sessions": {"store": store or f"sqlite:{folder / 'sessions.db'}"},
        "audit": {"file": folder / "audit.log"},
    }, sections)
    return write_config(folder, pki, upstream=upstream, extra=extra)
