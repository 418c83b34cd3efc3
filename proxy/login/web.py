"""Small HTTP helpers shared by the login page and the JSON API (pure, no Twisted).

- :func:`cross_site`: the Sec-Fetch-Site / Origin check against login CSRF (:mod:`proxy.gate.sameorigin`);
- :func:`safe_next`: the ``next`` redirect target, same-origin paths only (no open redirect);
- :class:`CsrfTokens`: a per-page token bound to a pre-auth cookie (HMAC of the cookie's
  random value), so a token is only valid together with the browser's own cookie;
- :func:`iso`: Keystone-style UTC timestamps.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from proxy.http.messages import ConnContext, RequestHead
from proxy.gate.sameorigin import cross_site as _cross_site

PRE_COOKIE = "__Host-certgate-pre"


def cross_site(head: RequestHead, conn: ConnContext) -> str | None:
    """Why the request looks cross-site, or None: :func:`proxy.gate.sameorigin.cross_site` on ``conn``'s scheme."""
    return _cross_site(head, conn.scheme)


def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` when it is a same-origin absolute path, else ``default``.

    Refuses ``//host``, ``/\\host``, schemes, control characters, backslashes and the login
    path itself (no loop). Does not check that the path exists.
    """
    if not value or not value.startswith("/") or len(value) > 2048:
        return default
    if value.startswith("//") or "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    if parts.path.startswith("/.certgate/login"):
        return default
    return value


def iso(ts: float) -> str:
    """``2026-11-22T14:00:00.000000Z`` (UTC, microseconds, as Keystone answers)."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CsrfTokens:
    """Tokens ``HMAC(key, pre-auth cookie value)``; the cookie value is 32 random bytes."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def new_cookie_value() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def valid_cookie_value(value: str | None) -> bool:
        return bool(value) and 40 <= len(value or "") <= 64 and all(
            c.isascii() and (c.isalnum() or c in "-_") for c in value or "")

    def token(self, cookie_value: str) -> str:
        return hmac.new(self._key, cookie_value.encode("ascii"), hashlib.sha256).hexdigest()

    def check(self, cookie_value: str | None, token: str | None) -> bool:
        """True only for a well-formed cookie and its token (constant-time comparison)."""
        if not self.valid_cookie_value(cookie_value) or not token or len(token) != 64:
            return False
        return hmac.compare_digest(self.token(cookie_value or ""), token)

    @staticmethod
    def cookie_header(value: str) -> tuple[bytes, bytes]:
        return (b"Set-Cookie", f"{PRE_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict".encode("ascii"))

    @staticmethod
    def clear_header() -> tuple[bytes, bytes]:
        return (b"Set-Cookie", f"{PRE_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0".encode("ascii"))
