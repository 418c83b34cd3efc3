"""Key files for the login package.

- ``[login] secret_key``: one line, 32+ random bytes base64url-encoded. Signs auth receipts
  (and, via :func:`derive_key` with another purpose, the Cockpit Bearer assertions), so the
  keys for different purposes are never the same bytes.
- ``[login] totp_key``: a Fernet key ring, one key a line, the first one encrypts and every
  one decrypts (``MultiFernet``), so a key can be rotated by adding a new first line.

Files are written by :func:`write_private`. A key file that exists but is unreadable or
malformed is an error, never silently replaced: that would invalidate every secret encrypted with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

from trust.folder import atomic_write

MIN_SECRET_BYTES = 32


class KeyFileError(Exception):
    """A key file cannot be read, created or parsed; the message says which file and why."""


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, readable by its owner only (0600 less the umask).

    For every file of the login package (keys, password hashes, TOTP seeds, credentials).
    Readers see the old or the new content, never a mix; see :func:`trust.folder.atomic_write`.
    Does not lock against concurrent writers (last rename wins).
    """
    atomic_write(path, data, 0o600)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: cannot read key file: {getattr(e, 'strerror', None) or e}") from None


def load_secret(path: Path, *, create: bool = False) -> bytes:
    """The raw secret of a ``secret_key`` file; with ``create``, a new one is written if missing.

    Raises KeyFileError when the file is missing (and ``create`` is false), unreadable, or
    holds fewer than 32 bytes of base64url data.
    """
    path = Path(path)
    text = _read(path)
    if text is None:
        if not create:
            raise KeyFileError(f"{path}: key file does not exist")
        raw = secrets.token_bytes(MIN_SECRET_BYTES)
        try:
            write_private(path, base64.urlsafe_b64encode(raw) + b"\n")
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create key file: {e.strerror}") from None
        return raw
    line = text.strip()
    try:
        raw = base64.urlsafe_b64decode(line + "=" * (-len(line) % 4))
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: line 1 is not base64url") from None
    if len(raw) < MIN_SECRET_BYTES:
        raise KeyFileError(f"{path}: line 1 holds {len(raw)} bytes, at least {MIN_SECRET_BYTES} are needed")
    return raw


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for ``purpose`` (e.g. ``"receipt"``, ``"cockpit-assertion"``) from ``secret``."""
    return hmac.new(secret, b"certgate/" + purpose.encode("ascii"), hashlib.sha256).digest()


def load_fernet(path: Path, *, create: bool = False) -> MultiFernet:
    """The key ring of a ``totp_key`` file; with ``create``, a new one-key ring if missing.

    Raises KeyFileError with the line number of a malformed key, or when the file is
    missing (without ``create``), unreadable or empty.
    """
    path = Path(path)
    text = _read(path)
    if text is None:
        if not create:
            raise KeyFileError(f"{path}: key file does not exist (`certgate totp enroll` creates it)")
        key = Fernet.generate_key()
        try:
            write_private(path, key + b"\n")
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create key file: {e.strerror}") from None
        return MultiFernet([Fernet(key)])
    keys: list[Fernet] = []
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(Fernet(line.encode("ascii")))
        except (ValueError, TypeError):
            raise KeyFileError(f"{path}: line {no} is not a Fernet key (32 bytes, base64url)") from None
    if not keys:
        raise KeyFileError(f"{path}: no key in the file")
    return MultiFernet(keys)


def b64url_encode(b: bytes) -> str:
    """Unpadded URL-safe base64 (tokens, WebAuthn ids)."""
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def b64url_decode(s: str) -> bytes:
    """The inverse of :func:`b64url_encode`; raises ``binascii.Error``/``ValueError`` on bad input."""
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
