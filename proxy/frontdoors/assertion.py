"""Short-lived signed Bearer assertions handed to cockpit-ws and checked by ``certgate cockpit-auth``.

Format (ASCII, safe in an ``Authorization: Bearer`` header)::

    cga1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(key, "cga1." + payload part))>

The payload is ``{"aud": "cockpit", "sub": account, "fp": fingerprint, "iat": t, "exp": t,
"jti": random id}``. The key is ``derive_key(secret, "cockpit-assertion")`` from the
``[login] secret_key`` file, so it never equals the key that signs auth receipts.

:func:`verify_assertion` checks the form, the signature (constant time), the audience and the
time window. It does NOT check single use: the caller consumes ``jti`` in the shared store
(``consume_once("cockpit-assertion", jti, exp)``), because the gateway mints and a separate
cockpit-auth process verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

PREFIX = "cga1"
AUDIENCE = "cockpit"
KEY_PURPOSE = "cockpit-assertion"
#: Longest lifetime a verifier accepts, whatever the token says ([cockpit] assertion_lifetime <= 900).
MAX_LIFETIME = 900.0
#: Seconds an ``iat`` may lie in the future (clock skew between gateway and cockpit host).
MAX_SKEW = 5.0
#: Longest token accepted before any decoding (a header value; bounds the work done).
MAX_TOKEN_LENGTH = 2048


class AssertionInvalid(Exception):
    """The assertion was refused; ``code`` is a stable reason code, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Assertion:
    """A verified assertion's claims."""

    account: str
    fingerprint: str
    issued_at: float
    expires_at: float
    jti: str


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str, what: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise AssertionInvalid("malformed", f"the {what} part is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AssertionInvalid("malformed", f"the {what} part is not base64url") from None


def _sign(key: bytes, signed_part: str) -> bytes:
    return hmac.new(key, signed_part.encode("ascii"), hashlib.sha256).digest()


def mint_assertion(key: bytes, *, account: str, fingerprint: str, now: float, lifetime: float,
                   jti: str | None = None) -> str:
    """A signed assertion for ``account`` bound to certificate ``fingerprint``, valid ``lifetime`` s.

    ``key`` is the derived assertion key (see module doc). Guarantees a fresh random ``jti``
    (128 bits) unless one is given (tests). Does not check that the account exists anywhere.
    """
    if not account:
        raise ValueError("mint_assertion: account is empty")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"mint_assertion: lifetime {lifetime} is outside (0, {MAX_LIFETIME:g}]")
    claims = {"aud": AUDIENCE, "sub": account, "fp": fingerprint, "iat": round(now, 3),
              "exp": round(now + lifetime, 3), "jti": jti or secrets.token_urlsafe(16)}
    payload = _b64e(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    signed = f"{PREFIX}.{payload}"
    return f"{signed}.{_b64e(_sign(key, signed))}"


def verify_assertion(key: bytes, token: str, *, now: float) -> Assertion:
    """The claims of ``token`` if it is well formed, signed with ``key``, for Cockpit and current.

    Raises :class:`AssertionInvalid` with code ``malformed``, ``bad-signature``, ``wrong-audience``,
    ``expired`` or ``not-yet-valid``. Single use is the caller's job (see module doc).
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise AssertionInvalid("malformed", f"the token is {len(token)} characters, at most "
                               f"{MAX_TOKEN_LENGTH} are accepted")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AssertionInvalid("malformed", f"the token is not {PREFIX}.<payload>.<signature>")
    sig = _b64d(parts[2], "signature")
    if not hmac.compare_digest(sig, _sign(key, f"{parts[0]}.{parts[1]}")):
        raise AssertionInvalid("bad-signature", "the signature does not match (wrong key or altered token)")
    try:
        claims = json.loads(_b64d(parts[1], "payload").decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AssertionInvalid("malformed", "the payload is not UTF-8 JSON") from None
    if not isinstance(claims, dict):
        raise AssertionInvalid("malformed", "the payload is not a JSON object")
    if claims.get("aud") != AUDIENCE:
        raise AssertionInvalid("wrong-audience", f"the audience is {claims.get('aud')!r}, not {AUDIENCE!r}")
    sub, fp, jti = claims.get("sub"), claims.get("fp"), claims.get("jti")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not (isinstance(sub, str) and sub and isinstance(fp, str) and isinstance(jti, str) and jti):
        raise AssertionInvalid("malformed", "sub, fp or jti is missing or not a string")
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (iat, exp)):
        raise AssertionInvalid("malformed", "iat or exp is missing or not a number")
    assert isinstance(iat, (int, float)) and isinstance(exp, (int, float))
    if exp - iat > MAX_LIFETIME or exp <= iat:
        raise AssertionInvalid("malformed", f"the lifetime {exp - iat:g} s is outside (0, {MAX_LIFETIME:g}]")
    if iat > now + MAX_SKEW:
        raise AssertionInvalid("not-yet-valid", f"issued {iat - now:.1f} s in the future")
    if now >= exp:
        raise AssertionInvalid("expired", f"expired {now - exp:.1f} s ago")
    return Assertion(account=sub, fingerprint=fp, issued_at=float(iat), expires_at=float(exp), jti=jti)


def assertion_key(secret: bytes) -> bytes:
    """The assertion signing key derived from the ``[login] secret_key`` secret."""
    from proxy.login.keys import derive_key

    return derive_key(secret, KEY_PURPOSE)
