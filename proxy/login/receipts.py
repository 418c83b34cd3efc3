"""Auth receipts (Keystone's multi-step login, stricter): signed, short-lived, single-use, bound.

A receipt is ``cgr1.PAYLOAD.MAC``: ``PAYLOAD`` is unpadded base64url JSON
``{"jti", "acct", "fp", "m", "iat", "exp"}`` and ``MAC`` is HMAC-SHA256 over ``cgr1.PAYLOAD``
with a key derived from the ``[login] secret_key`` file (purpose ``"receipt"``). It carries the
methods proven so far; it is not encrypted (nothing in it is secret) but cannot be altered.

:meth:`ReceiptCodec.open` guarantees, in this order: well-formed, MAC valid (constant-time),
not expired (``now < exp``, no grace), same account (exact), same certificate fingerprint.
Single use is the caller's second step: ``store.consume_once("receipt", jti, exp)`` must
return True exactly once (see :func:`consume`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from proxy.login.factors import METHODS, ordered
from proxy.login.keys import b64url_decode as _b64d, b64url_encode as _b64e

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred
    from proxy.interfaces import SessionStore

PREFIX = "cgr1"
MAX_LENGTH = 2048


class ReceiptError(Exception):
    """A receipt is unusable; ``reason`` is a stable code (receipt-malformed, -tampered, -expired,
    -other-account, -other-certificate, -reused)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Receipt:
    jti: str
    account: str
    fingerprint: str
    methods: tuple[str, ...]
    issued_at: float
    expires_at: float


class ReceiptCodec:
    """Issues and opens receipts with one 32-byte ``key`` (derive it: ``keys.derive_key(secret, "receipt")``)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("receipt key must have at least 32 bytes")
        self._key = key

    def _mac(self, signed: bytes) -> bytes:
        return hmac.new(self._key, signed, hashlib.sha256).digest()

    def issue(self, *, account: str, fingerprint: str, methods: Sequence[str], now: float,
              lifetime: float, not_after: float | None = None) -> tuple[str, Receipt]:
        """A new receipt valid until ``min(now + lifetime, not_after)``; returns (token, receipt)."""
        exp = now + lifetime if not_after is None else min(now + lifetime, not_after)
        rec = Receipt(secrets.token_urlsafe(18), account, fingerprint, tuple(ordered(methods)), now, exp)
        payload = json.dumps({"jti": rec.jti, "acct": account, "fp": fingerprint, "m": list(rec.methods),
                              "iat": now, "exp": exp}, separators=(",", ":")).encode("utf-8")
        signed = f"{PREFIX}.{_b64e(payload)}".encode("ascii")
        return f"{signed.decode('ascii')}.{_b64e(self._mac(signed))}", rec

    def open(self, token: str, *, account: str, fingerprint: str | None, now: float) -> Receipt:
        """The receipt in ``token`` if it is genuine, unexpired and bound to ``account`` and
        ``fingerprint``; else ReceiptError. Does not check single use."""
        if not isinstance(token, str) or len(token) > MAX_LENGTH or not token.isascii():
            raise ReceiptError("receipt-malformed", "not a short ASCII string")
        parts = token.strip().split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise ReceiptError("receipt-malformed", f"expected {PREFIX}.PAYLOAD.MAC")
        try:
            mac = _b64d(parts[2])
        except ValueError:
            raise ReceiptError("receipt-malformed", "MAC is not base64url") from None
        if not hmac.compare_digest(mac, self._mac(f"{parts[0]}.{parts[1]}".encode("ascii"))):
            raise ReceiptError("receipt-tampered", "signature does not match")
        try:
            d: Any = json.loads(_b64d(parts[1]))
            rec = Receipt(str(d["jti"]), str(d["acct"]), str(d["fp"]),
                          tuple(m for m in d["m"] if m in METHODS), float(d["iat"]), float(d["exp"]))
        except (ValueError, KeyError, TypeError):
            raise ReceiptError("receipt-malformed", "payload is not a receipt") from None
        if not now < rec.expires_at:
            raise ReceiptError("receipt-expired", f"expired at {rec.expires_at:.0f}")
        if rec.account != account:
            raise ReceiptError("receipt-other-account", "issued for another account")
        if fingerprint is None or not hmac.compare_digest(rec.fingerprint, fingerprint):
            raise ReceiptError("receipt-other-certificate", "issued on another certificate")
        return rec


def consume(store: SessionStore, rec: Receipt) -> Deferred[None]:
    """Mark ``rec`` used (store CAS): a Deferred failing with ReceiptError("receipt-reused") when it
    already was, and with StoreError when the use cannot be recorded (the receipt is then refused)."""
    def checked(first: bool) -> None:
        if not first:
            raise ReceiptError("receipt-reused", "this receipt was already used")
    return store.consume_once("receipt", rec.jti, rec.expires_at).addCallback(checked)
