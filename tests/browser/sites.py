"""What the browser suite runs against: the demo upstream, a real cockpit-ws, certgate in front.

- :class:`DemoUpstream`: ``certgate demo-upstream`` (a page echoing the headers it received).
- :func:`gateway_config`: a certgate config (test PKI, password file, TOTP secrets, audit
  file) with the given sections; :class:`Site` runs it and reads its log and audit lines.
- :class:`Accounts`: real local accounts (``useradd``/``chpasswd``) with certgate passwords
  and TOTP secrets, one per scenario so that TOTP steps and throttling never interfere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyotp

from proxy.login.passwords import set_password
from proxy.login.totp import TotpSecrets
from tests.blackbox import CERTGATE, Gateway, Pki, free_port, wait_for, write_config

PASSWORD = "correct horse battery"


class DemoUpstream:
    """``certgate demo-upstream`` on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(folder) / "demo-upstream.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([CERTGATE, "demo-upstream", "--port", str(self.port)], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"demo upstream exited: {self.log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                return False

        wait_for(up, 15, what="the demo upstream")

    def requests(self) -> list[dict[str, str]]:
        """Every request the upstream received so far: ``{"method", "path", "x-remote-user"}``."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


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
    """A certgate config for the suite; ``sections`` override or add keys."""
    folder.mkdir(parents=True, exist_ok=True)
    extra: dict[str, dict[str, object]] = {
        "login": {"password": "file", "password_file": accounts.passwd, "totp_secrets": accounts.totp_path,
                  "totp_key": accounts.totp_key, "secret_key": secret or folder / "certgate.secret"},
        "sessions": {"store": store or f"sqlite:{folder / 'sessions.db'}"},
        "audit": {"file": folder / "audit.log"},
    }
    for sec, kv in sections.items():
        extra.setdefault(sec, {}).update(kv)
    return write_config(folder, pki, upstream=upstream, extra=extra)


class Site:
    """A running certgate (``Gateway``) and what a failure report needs from it."""

    def __init__(self, config: Path, name: str) -> None:
        self.config = config
        self.name = name
        self.gw = Gateway(config)
        self.audit_path = config.parent / "audit.log"

    def start(self) -> "Site":
        self.gw.start()
        return self

    def stop(self) -> None:
        self.gw.stop()

    @property
    def port(self) -> int:
        return self.gw.port

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.gw.port}{path}"

    def audit(self) -> list[dict[str, Any]]:
        out = []
        try:
            lines = self.audit_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unparsed": line[:300]})
        return out

    def audit_has(self, **match: object) -> bool:
        return any(all(ev.get(k) == v for k, v in match.items()) for ev in self.audit())

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.gw.log().splitlines()[-n:])

    def report(self) -> str:
        audit = self.audit_path.read_text(errors="replace") if self.audit_path.exists() else "(none)"
        return (f"--- certgate {self.name}: log tail ---\n{self.log_tail()}\n"
                f"--- certgate {self.name}: audit ---\n" + "\n".join(audit.splitlines()[-30:]))


class Timer:
    """Monotonic seconds since construction."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.t0, 2)

