"""TOTP (RFC 6238, pyotp): secrets encrypted at rest, strict code syntax, no replay.

Secrets file (``[login] totp_secrets``), one account a line::

    ACCOUNT:FERNET_TOKEN

The token encrypts ``{"account": ..., "secret": BASE32, "created": EPOCH}`` with the key ring
of ``[login] totp_key`` (:func:`proxy.login.keys.load_fernet`). The account inside the
token must equal the line's account, so lines cannot be swapped between accounts.

Checking a code (:func:`check_code`):

1. only ``^[0-9]{6}$`` (ASCII, ``re.fullmatch``) is accepted, *before* pyotp sees it: pyotp
   NFKC-normalises, so full-width digits would otherwise verify (the Vault CVE-2025-6015 class);
2. ``verify_and_get_timecode`` with ``valid_window`` steps either side gives the matching time
   step;
3. the caller then records that step with the store's compare-and-set
   ``use_totp_step(account, step)``, so a step is never accepted twice, even across a restart.

A secret that cannot be decrypted (wrong key, tampered line) raises :class:`TotpError`: the
factor then fails; it never counts as "not enrolled".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyotp
from pyotp.exceptions import OTPVerificationError
from cryptography.fernet import InvalidToken

from proxy.login.keys import KeyFileError, load_fernet, write_private

CODE_RE = re.compile(r"[0-9]{6}")
INTERVAL = 30
ISSUER = "certgate"


class TotpError(Exception):
    """The TOTP secrets or key cannot be used; the message says which file/line and why."""


def valid_syntax(code: object) -> bool:
    """True only for a ``str`` of exactly six ASCII digits (no spaces, no other digits)."""
    return isinstance(code, str) and CODE_RE.fullmatch(code) is not None


def check_code(secret: str, code: object, now: float, window: int) -> int | None:
    """The time step ``code`` matches within ``window`` steps of ``now``, or None.

    Does not check replay: the caller must pass the step to ``store.use_totp_step``.
    """
    if not valid_syntax(code):
        return None
    try:
        return int(pyotp.TOTP(secret, interval=INTERVAL).verify_and_get_timecode(
            code, for_time=now, valid_window=window))  # type: ignore[arg-type]
    except (OTPVerificationError, ValueError):
        return None


def provisioning_uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app scans (never sent anywhere)."""
    return pyotp.TOTP(secret, interval=INTERVAL).provisioning_uri(name=account, issuer_name=issuer)


def new_secret() -> str:
    """A fresh 160-bit base32 secret."""
    return pyotp.random_base32()


@dataclass(frozen=True)
class Enrollment:
    account: str
    created: float


class TotpSecrets:
    """The secrets file and its key file.

    ``enrolled`` reads only the file's lines (no key needed); ``secret`` decrypts and raises
    TotpError on any failure. Files are re-read on every call (they are small); writes are
    atomic with mode 0600.
    """

    def __init__(self, secrets_path: Path | str, key_path: Path | str) -> None:
        self.path = Path(secrets_path)
        self.key_path = Path(key_path)

    # ------------------------------------------------------------- reading

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            raise TotpError(f"{self.path}: cannot read TOTP secrets: {getattr(e, 'strerror', None) or e}") from None

    def _entries(self) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for no, line in enumerate(self._lines(), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            account, sep, token = line.rpartition(":")
            if not sep or not account or not token.strip():
                raise TotpError(f"{self.path}:{no}: expected ACCOUNT:TOKEN")
            if account in out:
                raise TotpError(f"{self.path}:{no}: account {account!r} appears twice")
            out[account] = (no, token.strip())
        return out

    def enrolled(self, account: str) -> bool:
        """True when ``account`` has a line (decryptable or not). Raises TotpError if unreadable."""
        return account in self._entries()

    def accounts(self) -> list[str]:
        return sorted(self._entries())

    def _decrypt(self, account: str, no: int, token: str) -> dict[str, object]:
        try:
            ring = load_fernet(self.key_path)
        except KeyFileError as e:
            raise TotpError(str(e)) from None
        try:
            data = json.loads(ring.decrypt(token.encode("ascii")))
        except (InvalidToken, UnicodeEncodeError, ValueError):
            raise TotpError(f"{self.path}:{no}: the secret of {account!r} cannot be decrypted with "
                            f"{self.key_path} (wrong key or altered line)") from None
        if not isinstance(data, dict) or data.get("account") != account or not isinstance(data.get("secret"), str):
            raise TotpError(f"{self.path}:{no}: the secret does not belong to {account!r}")
        return data

    def secret(self, account: str) -> str:
        """``account``'s decrypted base32 secret; TotpError if not enrolled or not decryptable."""
        ent = self._entries().get(account)
        if ent is None:
            raise TotpError(f"{account!r} has no TOTP secret")
        return str(self._decrypt(account, *ent)["secret"])

    def list(self) -> list[tuple[str, Enrollment | str]]:
        """Every account with its Enrollment, or the reason it cannot be decrypted."""
        out: list[tuple[str, Enrollment | str]] = []
        for account, (no, token) in sorted(self._entries().items()):
            try:
                data = self._decrypt(account, no, token)
                out.append((account, Enrollment(account, float(data.get("created") or 0))))  # type: ignore[arg-type]
            except TotpError as e:
                out.append((account, str(e)))
        return out

    # ------------------------------------------------------------- writing

    def store(self, account: str, secret: str, now: float) -> None:
        """Encrypt and store ``secret`` for ``account`` (replacing any), creating the key if missing."""
        if not account or not account.isprintable() or account != account.strip():
            raise TotpError(f"the account name {account!r} is empty or has control characters/spaces")
        try:
            ring = load_fernet(self.key_path, create=True)
        except KeyFileError as e:
            raise TotpError(str(e)) from None
        token = ring.encrypt(json.dumps({"account": account, "secret": secret, "created": now}).encode())
        entry = f"{account}:{token.decode('ascii')}"
        lines, done = [], False
        self._entries()  # refuse to rewrite a malformed file
        for line in self._lines():
            if line.strip() and not line.strip().startswith("#") and line.rpartition(":")[0] == account:
                lines.append(entry)
                done = True
            else:
                lines.append(line)
        if not done:
            lines.append(entry)
        write_private(self.path, ("\n".join(lines) + "\n").encode("utf-8"))

    def remove(self, account: str) -> bool:
        """Remove ``account``'s secret; False when it had none."""
        self._entries()
        lines = self._lines()
        out = [ln for ln in lines
               if not (ln.strip() and not ln.strip().startswith("#") and ln.rpartition(":")[0] == account)]
        if len(out) == len(lines):
            return False
        write_private(self.path, ("\n".join(out) + "\n").encode("utf-8") if out else b"")
        return True
