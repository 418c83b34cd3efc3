"""WebAuthn ceremonies (security keys, passkeys) for the ``webauthn`` login factor.

The attestation and assertion checks are py_webauthn's (``webauthn`` 3.x: pure functions,
no transport, so this module stays free of Twisted); what certgate adds:

- **Challenges** are sealed tokens ``cgw1.PAYLOAD.MAC`` (HMAC-SHA256, key purpose
  ``"webauthn"`` of ``[login] secret_key``) *used as the challenge bytes themselves*:
  ``PAYLOAD`` names the ceremony (``reg``/``auth``), the account, the certificate fingerprint,
  a random id and the expiry. The authenticator signs over the challenge, so the binding to
  account and certificate cannot be altered, and any gateway holding the same key can check
  it. Single use is recorded in the session store (:mod:`proxy.login.webauthn_state`),
  shared by every worker and gateway of that store.
- **Sign counters** are compared here (not by the library) with the count the caller
  stored: when the stored or the new count is non-zero, the new one must be strictly greater
  (:class:`CounterRegression`); the caller then advances the store's counter atomically.
- **Credentials** must belong to the account being logged in (the caller passes only that
  account's credentials).

Nothing here reads files or the store except through the arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from webauthn import (generate_authentication_options, generate_registration_options, options_to_json,
                      verify_authentication_response, verify_registration_response)
from webauthn.helpers import (base64url_to_bytes, bytes_to_base64url, parse_authentication_credential_json,
                              parse_client_data_json, parse_registration_credential_json)
from webauthn.helpers.exceptions import (InvalidAuthenticationResponse, InvalidCBORData, InvalidJSONStructure,
                                         InvalidRegistrationResponse, WebAuthnException)
from webauthn.helpers.structs import (AttestationConveyancePreference, AuthenticatorSelectionCriteria,
                                      PublicKeyCredentialDescriptor, ResidentKeyRequirement,
                                      UserVerificationRequirement)

from proxy.login.keys import b64url_decode as _b64d, b64url_encode as _b64e

PREFIX = "cgw1"
MAX_RESPONSE = 12000  # characters of a credential's JSON
UV_CHOICES = ("preferred", "required")


class WebAuthnError(Exception):
    """A ceremony failed; ``reason`` is a stable code for the audit log (``webauthn-...``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class CounterRegression(WebAuthnError):
    """The authenticator's signature counter did not move forward (a cloned key, or a replay)."""

    def __init__(self, credential_id: str, stored: int, received: int, challenge: "Challenge | None" = None) -> None:
        self.credential_id, self.stored, self.received, self.challenge = credential_id, stored, received, challenge
        super().__init__("webauthn-counter-regression", f"counter {received} after {stored}")


@dataclass(frozen=True)
class Challenge:
    jti: str
    kind: str  # "reg" or "auth"
    account: str
    fingerprint: str
    expires_at: float


@dataclass(frozen=True)
class StoredCredential:
    """What certgate keeps of one credential (see :mod:`proxy.login.webauthn_creds`)."""

    id: str  # base64url credential id
    public_key: str  # base64url COSE key
    sign_count: int
    name: str
    created: float
    last_used: float | None = None
    user_verified: bool = False


@dataclass(frozen=True)
class NewCredential:
    id: str
    public_key: str
    sign_count: int
    user_verified: bool
    aaguid: str


@dataclass(frozen=True)
class Assertion:
    credential_id: str
    new_sign_count: int
    user_verified: bool


class Ceremonies:
    """Options and checks for one relying party (``rp_id``, exact ``origin``)."""

    def __init__(self, key: bytes, *, rp_id: str, origin: str, rp_name: str = "certgate",
                 lifetime: float = 120.0) -> None:
        if len(key) < 32:
            raise ValueError("webauthn key must have at least 32 bytes")
        self._key = key
        self.rp_id, self.origin, self.rp_name, self.lifetime = rp_id, origin, rp_name, float(lifetime)

    # ------------------------------------------------------------------ challenges

    def _mac(self, signed: bytes) -> bytes:
        return hmac.new(self._key, signed, hashlib.sha256).digest()

    def _seal(self, kind: str, account: str, fingerprint: str, now: float) -> tuple[bytes, Challenge]:
        ch = Challenge(secrets.token_urlsafe(18), kind, account, fingerprint, now + self.lifetime)
        payload = json.dumps({"jti": ch.jti, "k": kind, "acct": account, "fp": fingerprint, "exp": ch.expires_at},
                             separators=(",", ":")).encode("utf-8")
        signed = f"{PREFIX}.{_b64e(payload)}".encode("ascii")
        return signed + b"." + _b64e(self._mac(signed)).encode("ascii"), ch

    def open_challenge(self, raw: bytes, *, kind: str, account: str, fingerprint: str | None,
                       now: float) -> Challenge:
        """The challenge sealed in ``raw`` if genuine, of ``kind``, unexpired and bound to ``account``
        and ``fingerprint``; else WebAuthnError. Does not check single use (:func:`proxy.login.webauthn_state.consume`)."""
        parts = raw.split(b".")
        if len(parts) != 3 or parts[0] != PREFIX.encode():
            raise WebAuthnError("webauthn-challenge-invalid", "not a certgate challenge")
        try:
            mac = _b64d(parts[2].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise WebAuthnError("webauthn-challenge-invalid", "malformed") from None
        if not hmac.compare_digest(mac, self._mac(parts[0] + b"." + parts[1])):
            raise WebAuthnError("webauthn-challenge-invalid", "signature does not match")
        try:
            d: Any = json.loads(_b64d(parts[1].decode("ascii")))
            ch = Challenge(str(d["jti"]), str(d["k"]), str(d["acct"]), str(d["fp"]), float(d["exp"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise WebAuthnError("webauthn-challenge-invalid", "malformed payload") from None
        if ch.kind != kind:
            raise WebAuthnError("webauthn-challenge-invalid", f"issued for {ch.kind}, used for {kind}")
        if not now < ch.expires_at:
            raise WebAuthnError("webauthn-challenge-expired", f"expired at {ch.expires_at:.0f}")
        if ch.account != account:
            raise WebAuthnError("webauthn-challenge-invalid", "issued for another account")
        if fingerprint is None or not hmac.compare_digest(ch.fingerprint, fingerprint):
            raise WebAuthnError("webauthn-challenge-invalid", "issued on another certificate")
        return ch

    # ------------------------------------------------------------------ registration

    def registration_options(self, *, account: str, fingerprint: str, user_handle: bytes,
                             existing: Iterable[str], uv: str, now: float) -> tuple[dict[str, Any], Challenge]:
        """``PublicKeyCredentialCreationOptions`` (JSON form) for ``account`` with a fresh challenge;
        ``existing`` credential ids are excluded (no second registration of the same key)."""
        challenge, ch = self._seal("reg", account, fingerprint, now)
        opts = generate_registration_options(
            rp_id=self.rp_id, rp_name=self.rp_name, user_name=account, user_id=user_handle,
            user_display_name=account, challenge=challenge, timeout=int(self.lifetime * 1000),
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED, user_verification=UserVerificationRequirement(uv)),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c)) for c in existing])
        return json.loads(options_to_json(opts)), ch

    def verify_registration(self, response: str, *, account: str, fingerprint: str | None, uv: str,
                            now: float) -> tuple[NewCredential, Challenge]:
        """Check a registration response (attestation ``none`` or self/packed, origin, RP id,
        challenge binding, user verification when ``uv == "required"``). Does not check single use."""
        cred, raw = _parse(response, parse_registration_credential_json)
        ch = self.open_challenge(raw, kind="reg", account=account, fingerprint=fingerprint, now=now)
        try:
            v = verify_registration_response(credential=cred, expected_challenge=raw, expected_rp_id=self.rp_id,
                                             expected_origin=self.origin, require_user_verification=uv == "required")
        except InvalidRegistrationResponse as e:
            raise WebAuthnError(_why(str(e)), str(e)) from None
        return NewCredential(bytes_to_base64url(v.credential_id), bytes_to_base64url(v.credential_public_key),
                             int(v.sign_count), bool(v.user_verified), str(v.aaguid)), ch

    # ------------------------------------------------------------------ authentication

    def authentication_options(self, *, account: str, fingerprint: str, credentials: Sequence[str], uv: str,
                               now: float) -> tuple[dict[str, Any], Challenge]:
        """``PublicKeyCredentialRequestOptions`` (JSON form) allowing only ``credentials``."""
        challenge, ch = self._seal("auth", account, fingerprint, now)
        opts = generate_authentication_options(
            rp_id=self.rp_id, challenge=challenge, timeout=int(self.lifetime * 1000),
            allow_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c)) for c in credentials],
            user_verification=UserVerificationRequirement(uv))
        return json.loads(options_to_json(opts)), ch

    def verify_assertion(self, response: str, *, account: str, fingerprint: str | None,
                         credentials: Sequence[StoredCredential], uv: str, now: float) -> tuple[Assertion, Challenge]:
        """Check an assertion: challenge binding, a credential of ``credentials`` (the account's),
        origin, RP id, signature, user verification when ``uv == "required"``, and the counter.
        Does not check single use nor store the new counter."""
        cred, raw = _parse(response, parse_authentication_credential_json)
        ch = self.open_challenge(raw, kind="auth", account=account, fingerprint=fingerprint, now=now)
        cid = bytes_to_base64url(cred.raw_id)
        stored = next((c for c in credentials if hmac.compare_digest(c.id, cid)), None)
        if stored is None:
            raise WebAuthnError("webauthn-unknown-credential", "not a credential of this account")
        try:
            v = verify_authentication_response(
                credential=cred, expected_challenge=raw, expected_rp_id=self.rp_id, expected_origin=self.origin,
                credential_public_key=base64url_to_bytes(stored.public_key), credential_current_sign_count=0,
                require_user_verification=uv == "required")
        except InvalidAuthenticationResponse as e:
            raise WebAuthnError(_why(str(e)), str(e)) from None
        new = int(v.new_sign_count)
        if (stored.sign_count or new) and new <= stored.sign_count:
            raise CounterRegression(cid, stored.sign_count, new, ch)
        return Assertion(cid, new, bool(v.user_verified)), ch


def _parse(response: str, parse: Any) -> tuple[Any, bytes]:
    """The parsed credential and the challenge bytes its client data carries."""
    if not isinstance(response, str) or len(response) > MAX_RESPONSE:
        raise WebAuthnError("webauthn-malformed", "not a short JSON string")
    try:
        cred = parse(response)
        raw = parse_client_data_json(cred.response.client_data_json).challenge
    except (InvalidJSONStructure, InvalidCBORData, WebAuthnException, ValueError, TypeError, KeyError) as e:
        raise WebAuthnError("webauthn-malformed", str(e)[:200]) from None
    return cred, raw


def _why(message: str) -> str:
    """A stable reason code for a library refusal (the message goes to the audit detail)."""
    m = message.lower()
    if "origin" in m:
        return "webauthn-wrong-origin"
    if "rp id" in m or "rp_id" in m:
        return "webauthn-wrong-rp"
    if "user verification" in m:
        return "webauthn-uv-required"
    if "signature" in m:
        return "webauthn-bad-signature"
    return "webauthn-invalid"


def user_handle(secret: bytes, account: str) -> bytes:
    """A stable, opaque 32-byte user handle for ``account`` (no account name on the authenticator's
    handle; derived with the webauthn key so it is the same on every gateway)."""
    return hmac.new(secret, b"user-handle\0" + account.encode("utf-8"), hashlib.sha256).digest()
