"""certgate's own password file: scrypt hashes, one account a line.

Format (UTF-8, ``#`` comments and blank lines allowed)::

    ACCOUNT:scrypt$N$r$p$SALT$HASH

``N`` (a power of two, 2^10..2^20), ``r`` (1..32), ``p`` (1..16) are scrypt's cost
parameters; ``SALT`` (16+ bytes) and ``HASH`` (32 bytes) are unpadded base64url. The account
is everything before the *last* ``:`` (the hash part never contains one) and must be
printable, without control characters. Passwords are UTF-8 after Unicode NFC normalisation
(RFC 8265 OpaqueString), 1..1024 characters.

Verification compares with :func:`hmac.compare_digest`; an unknown account is checked
against a dummy hash of the cost of the file's entries, so the time taken does not reveal whether the
account exists. The file is re-read when its size, mtime or inode changes; a broken file
makes every verification fail (closed) with :class:`PasswordFileError` naming the lines.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from proxy.login.keys import write_private

DEFAULT_N = 2 ** 15
DEFAULT_R = 8
DEFAULT_P = 1
HASH_BYTES = 32
SALT_BYTES = 16
MAX_PASSWORD = 1024


class PasswordFileError(Exception):
    """The password file is unreadable or malformed; ``problems`` are ``"FILE:LINE: reason"``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class PasswordError(ValueError):
    """A password (or account name) that may not be stored; the message says why."""


@dataclass(frozen=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode("ascii")  # noqa: E731
        return f"scrypt${self.n}${self.r}${self.p}${b(self.salt)}${b(self.digest)}"


def _b64(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _normalize(password: str) -> bytes:
    return unicodedata.normalize("NFC", password).encode("utf-8")


def check_password_text(password: str) -> None:
    """Raise PasswordError when ``password`` may not be stored (empty, too long, NUL)."""
    if not password:
        raise PasswordError("the password is empty")
    if len(password) > MAX_PASSWORD:
        raise PasswordError(f"the password is longer than {MAX_PASSWORD} characters")
    if "\x00" in password:
        raise PasswordError("the password contains a NUL character")


def check_account_name(account: str) -> None:
    """Raise PasswordError when ``account`` cannot be a line key (empty, control characters)."""
    if not account:
        raise PasswordError("the account name is empty")
    if not account.isprintable() or account != account.strip():
        raise PasswordError(f"the account name {account!r} has control characters or surrounding spaces")
    if len(account) > 256:
        raise PasswordError("the account name is longer than 256 characters")


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES,
                          maxmem=256 * r * n * p + (1 << 20))


def hash_password(password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P,
                  salt: bytes | None = None) -> ScryptHash:
    """A fresh scrypt hash of ``password`` (random 16-byte salt unless given)."""
    check_password_text(password)
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    return ScryptHash(n, r, p, salt, _scrypt(_normalize(password), salt, n, r, p))


def parse_hash(text: str) -> ScryptHash:
    """Parse ``scrypt$N$r$p$SALT$HASH``; ValueError says which field is wrong and why."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$r$p$SALT$HASH")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        raise ValueError("N, r and p must be integers") from None
    if n < 2 ** 10 or n > 2 ** 20 or n & (n - 1):
        raise ValueError(f"N={n} is not a power of two in 2^10..2^20")
    if not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"r={r} (1..32) or p={p} (1..16) out of range")
    try:
        salt, digest = _b64(parts[4]), _b64(parts[5])
    except ValueError:
        raise ValueError("salt or hash is not unpadded base64url") from None
    if len(salt) < SALT_BYTES:
        raise ValueError(f"salt has {len(salt)} bytes, at least {SALT_BYTES} are needed")
    if len(digest) != HASH_BYTES:
        raise ValueError(f"hash has {len(digest)} bytes, {HASH_BYTES} expected")
    return ScryptHash(n, r, p, salt, digest)


def verify_hash(h: ScryptHash, password: str) -> bool:
    """True when ``password`` matches ``h`` (constant-time comparison of the digests)."""
    if not password or len(password) > MAX_PASSWORD:
        _scrypt(b"x", h.salt, h.n, h.r, h.p)  # same work either way
        return False
    return hmac.compare_digest(_scrypt(_normalize(password), h.salt, h.n, h.r, h.p), h.digest)


def parse_file(text: str, path: str) -> tuple[dict[str, ScryptHash], list[str]]:
    """Entries and problems (``"PATH:LINE: reason"``) of a password file's text."""
    entries: dict[str, ScryptHash] = {}
    problems: list[str] = []
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        account, sep, hashed = line.rstrip("\r\n").rpartition(":")
        if not sep or not account:
            problems.append(f"{path}:{no}: expected ACCOUNT:scrypt$N$r$p$SALT$HASH")
            continue
        try:
            check_account_name(account)
        except PasswordError as e:
            problems.append(f"{path}:{no}: {e}")
            continue
        if account in entries:
            problems.append(f"{path}:{no}: account {account!r} appears twice")
            continue
        try:
            entries[account] = parse_hash(hashed.strip())
        except ValueError as e:
            problems.append(f"{path}:{no}: {e}")
    return entries, problems


class PasswordFile:
    """The password file at ``path``, re-read when it changes on disk.

    ``verify`` guarantees: False for an unknown account after the same scrypt work as a known
    one; PasswordFileError (never True) when the file is missing, unreadable or malformed.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, ScryptHash] = {}
        self._dummy = ScryptHash(DEFAULT_N, DEFAULT_R, DEFAULT_P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)

    def entries(self) -> dict[str, ScryptHash]:
        """The current entries (a copy); raises PasswordFileError when the file is bad."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise PasswordFileError([f"{self.path}: does not exist (create it with `certgate passwd ACCOUNT`)"]
                                    ) from None
        except OSError as e:
            raise PasswordFileError([f"{self.path}: {e.strerror}"]) from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as e:
                raise PasswordFileError([f"{self.path}: {e.strerror}"]) from None
            except UnicodeDecodeError as e:
                raise PasswordFileError([f"{self.path}: not UTF-8 (byte {e.start})"]) from None
            entries, problems = parse_file(text, str(self.path))
            if problems:
                raise PasswordFileError(problems)
            self._entries, self._stamp = entries, stamp
        return dict(self._entries)

    def has(self, account: str) -> bool:
        return account in self.entries()

    def verify(self, account: str, password: str) -> bool:
        """True only when ``account`` exists and ``password`` matches its hash."""
        entries = self.entries()
        h = entries.get(account)
        if h is None:
            # the same work as a real entry (its cost), so timing does not reveal the account
            like = next(iter(entries.values()), self._dummy)
            verify_hash(ScryptHash(like.n, like.r, like.p, self._dummy.salt, self._dummy.digest), password or "x")
            return False
        return verify_hash(h, password)


def read_lines(path: Path) -> list[str]:
    """The file's lines (without newlines), [] if it does not exist; for editing."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def set_password(path: Path | str, account: str, password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R,
                 p: int = DEFAULT_P) -> None:
    """Store ``account``'s new hash (replacing its line, keeping every other line and comment).

    Atomic, mode 0600. Raises PasswordError for a bad account/password and PasswordFileError
    when the existing file is malformed (it is then left untouched).
    """
    path = Path(path)
    check_account_name(account)
    lines = read_lines(path)
    _, problems = parse_file("\n".join(lines), str(path))
    if problems:
        raise PasswordFileError(problems)
    entry = f"{account}:{hash_password(password, n=n, r=r, p=p).encode()}"
    out, done = [], False
    for line in lines:
        if line.strip() and not line.strip().startswith("#") and line.rpartition(":")[0] == account:
            out.append(entry)
            done = True
        else:
            out.append(line)
    if not done:
        out.append(entry)
    write_private(path, ("\n".join(out) + "\n").encode("utf-8"))


def delete_password(path: Path | str, account: str) -> bool:
    """Remove ``account``'s line; False when it had none. Atomic, mode 0600."""
    path = Path(path)
    lines = read_lines(path)
    _, problems = parse_file("\n".join(lines), str(path))
    if problems:
        raise PasswordFileError(problems)
    out = [ln for ln in lines
           if not (ln.strip() and not ln.strip().startswith("#") and ln.rpartition(":")[0] == account)]
    if len(out) == len(lines):
        return False
    write_private(path, ("\n".join(out) + "\n").encode("utf-8") if out else b"")
    return True
