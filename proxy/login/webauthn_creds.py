"""WebAuthn credentials per account: one JSON file (``[webauthn] credentials``).

``{"version": 1, "accounts": {"alice": [{"id", "public_key", "sign_count", "name", "created",
"last_used", "user_verified"}]}}``. Public keys are not secret; the file is still written with
mode 0600 (it says who has which key). Every change (add, remove, a login's new counter) is a
read-modify-write under an exclusive ``flock`` on ``PATH.lock`` and an atomic rename, so
several workers on one host never lose an update; the counter only moves forward
(:meth:`CredentialFile.record_use` refuses a regression under the lock). Gateways on several
hosts need this file on shared storage, like the password and TOTP files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from proxy.login.keys import write_private
from proxy.login.webauthn import StoredCredential

MAX_NAME = 64
MAX_PER_ACCOUNT = 16


class CredentialFileError(Exception):
    """The credentials file cannot be used; the message names the file and why."""


def clean_name(name: object) -> str:
    """A credential name: printable, trimmed, 1..64 characters; ValueError says why not."""
    if not isinstance(name, str):
        raise ValueError("the name must be text")
    s = " ".join(name.split())
    if not s or len(s) > MAX_NAME or not s.isprintable():
        raise ValueError(f"the name must be 1 to {MAX_NAME} printable characters")
    return s


class CredentialFile:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise CredentialFileError(f"{lock}: cannot open the lock file: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            raise CredentialFileError(f"{self.path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
        try:
            d = json.loads(text) if text.strip() else {"version": 1, "accounts": {}}
            accounts = d["accounts"]
            if d.get("version") != 1 or not isinstance(accounts, dict):
                raise ValueError("not version 1")
            for creds in accounts.values():
                for c in creds:
                    _cred(c)
            return accounts
        except (ValueError, KeyError, TypeError) as e:
            raise CredentialFileError(f"{self.path}: not a certgate WebAuthn credentials file ({e})") from None

    def _write(self, accounts: dict[str, list[dict[str, Any]]]) -> None:
        data = {"version": 1, "accounts": {a: c for a, c in sorted(accounts.items()) if c}}
        write_private(self.path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))

    # ------------------------------------------------------------------ reading

    def credentials(self, account: str) -> list[StoredCredential]:
        """``account``'s credentials (none when the file does not exist); CredentialFileError if unreadable."""
        return [_cred(c) for c in self._read().get(account, [])]

    def enrolled(self, account: str) -> bool:
        return bool(self._read().get(account))

    def accounts(self) -> dict[str, list[StoredCredential]]:
        return {a: [_cred(c) for c in cs] for a, cs in sorted(self._read().items())}

    # ------------------------------------------------------------------ changes

    def add(self, account: str, cred: StoredCredential) -> None:
        """Store ``cred`` for ``account``; CredentialFileError when the id is registered already
        (to any account) or the account has :data:`MAX_PER_ACCOUNT` credentials."""
        with self._locked():
            accounts = self._read()
            if any(c["id"] == cred.id for cs in accounts.values() for c in cs):
                raise CredentialFileError("this security key is registered already")
            mine = accounts.setdefault(account, [])
            if len(mine) >= MAX_PER_ACCOUNT:
                raise CredentialFileError(f"{account!r} has {MAX_PER_ACCOUNT} keys already; remove one first")
            mine.append(asdict(cred))
            self._write(accounts)

    def remove(self, account: str, selector: str | None = None) -> list[StoredCredential]:
        """Remove ``account``'s credentials whose id or name is ``selector`` (all when None); the removed."""
        with self._locked():
            accounts = self._read()
            mine = accounts.get(account, [])
            gone = [c for c in mine if selector is None or selector in (c["id"], c["name"])]
            if gone:
                accounts[account] = [c for c in mine if c not in gone]
                self._write(accounts)
            return [_cred(c) for c in gone]

    def record_use(self, account: str, credential_id: str, sign_count: int, now: float) -> int | None:
        """Store the new counter and last use; None when done, else the stored counter that
        ``sign_count`` does not exceed (regression, nothing written). KeyError when gone."""
        with self._locked():
            accounts = self._read()
            c = next((c for c in accounts.get(account, []) if c["id"] == credential_id), None)
            if c is None:
                raise KeyError(credential_id)
            stored = int(c["sign_count"])
            if (stored or sign_count) and sign_count <= stored:
                return stored
            c["sign_count"], c["last_used"] = int(sign_count), now
            self._write(accounts)
            return None


def _cred(c: Any) -> StoredCredential:
    if not isinstance(c, dict):
        raise ValueError("a credential is not an object")
    return StoredCredential(id=str(c["id"]), public_key=str(c["public_key"]), sign_count=int(c["sign_count"]),
                            name=str(c["name"]), created=float(c["created"]),
                            last_used=None if c.get("last_used") is None else float(c["last_used"]),
                            user_verified=bool(c.get("user_verified", False)))
