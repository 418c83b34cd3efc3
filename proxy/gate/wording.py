"""What certgate tells a person, in plain words, the same for the same case on every page.

The login page, the gate's explanation pages (``want`` mode), the login API and the
Cockpit front door (whose login page shows our text) all take their sentences from here.
Verdict codes (``unknown-ca``, ``expired`` …) and store file names stay in the audit log;
a person reads what happened and what to do. Pure code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trust.ocsp import ERROR_CODES as OCSP_ERROR_CODES

if TYPE_CHECKING:  # pragma: no cover
    from proxy.listener.identity import ConnectionIdentity

LOGIN_PATH = "/.certgate/login"

NO_CERTIFICATE = ("Your browser did not present a certificate. Insert your smart card (or install your "
                  "certificate), then restart the browser or open a new private window so that it asks again.")
ADVICE = "Choose another certificate (restart the browser to be asked again) or contact your administrator."
WRONG_ACCOUNT = ("This certificate does not belong to the account you entered. Log in as the account your "
                 "certificate names, or choose another certificate.")
SESSION_ENDED = ("Your certgate session has ended: your certificate (smart card) is needed again. "
                 "Insert it, then log in again.")

# Verdict reason codes -> why, in plain words (first match in the verdict's order wins).
_WHY: dict[str, str] = {
    "expired": "it has expired",
    "pinned-expired": "it has expired",
    "not-yet-valid": "it is not valid yet",
    "revoked": "it has been revoked",
    "unknown-ca": "it was not issued by an authority this gateway trusts",
    "chain-invalid": "it was not issued by an authority this gateway trusts",
    "issuer-not-ca": "it was not issued by an authority this gateway trusts",
    "chain-too-deep": "it was not issued by an authority this gateway trusts",
    "bad-signature": "it was not issued by an authority this gateway trusts",
    "ca-leaf": "it is not meant for logging in to websites",
    "wrong-usage": "it is not meant for logging in to websites",
    "no-client-usage": "it is not meant for logging in to websites",
    "weak-key": "its key or signature is too weak",
    "weak-signature": "its key or signature is too weak",
    "unsupported-key": "its key type is not supported",
    "crl-expired": "its revocation status cannot be checked right now",
    "ocsp-revoked": "it has been revoked",
    "ocsp-unknown": "the authority that issued it does not know it",
    **{code: "its revocation status cannot be checked right now" for code in OCSP_ERROR_CODES},
}
_NO_ACCOUNT = "it does not name an account this gateway knows"
_UNKNOWN = "it could not be verified"


def refusal_reason(identity: "ConnectionIdentity") -> str:
    """Why a *presented* certificate is refused, as a short plain clause ("it has expired").

    Reads only the verdict's reason codes and whether an account was mapped; never shows the
    verdict's own text (it names files and issuers). For an accepted certificate with an
    account it still returns the generic clause: callers ask only about refused ones.
    """
    verdict: Any = identity.verdict
    if verdict is not None and not verdict.ok:
        for reason in getattr(verdict, "reasons", ()) or ():
            why = _WHY.get(getattr(reason, "code", ""))
            if why is not None:
                return why
        return _UNKNOWN
    if verdict is not None and identity.account is None:
        return _NO_ACCOUNT
    return _UNKNOWN


def certificate_refused(identity: "ConnectionIdentity") -> str:
    """The whole sentence for a refused certificate: what, why, what to do."""
    return f"This gateway does not accept the certificate your browser presented: {refusal_reason(identity)}. {ADVICE}"


def certificate_problem(identity: "ConnectionIdentity") -> str | None:
    """The sentence for this connection's certificate problem, or None when it is fine."""
    if not identity.presented:
        return NO_CERTIFICATE
    if not identity.ok:
        return certificate_refused(identity)
    return None
