"""Small, pure facts about certificates shared by the store, the verifier and the CLI.

Nothing here decides trust: these helpers only read fields (fingerprint, key strength,
usages, CN values) in one consistent way.
"""

from __future__ import annotations

import datetime as _dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trust.escape import safe_text

#: Elliptic curves accepted anywhere in a chain.
ALLOWED_CURVES = ("secp256r1", "secp384r1")
#: Hard floor for RSA keys; the policy may ask for more, never for less.
RSA_FLOOR = 2048


def fingerprint(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the certificate's DER encoding."""
    return cert.fingerprint(hashes.SHA256()).hex()


def spki_sha256(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo (identifies the key)."""
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str | None:
    """``"AB:CD:…"`` / ``"abcd…"`` / ``"sha256:…"`` -> 64 lower-case hex digits, else None."""
    t = text.strip().lower()
    if t.startswith("sha256:"):
        t = t[len("sha256:"):]
    t = t.replace(":", "")
    if len(t) == 64 and all(c in "0123456789abcdef" for c in t):
        return t
    return None


def subject_text(name: x509.Name) -> str:
    """RFC 4514 string of a name (most specific RDN first, as RFC 4514 requires)."""
    return name.rfc4514_string()


def label(name: x509.Name) -> str:
    """The RFC 4514 name made safe for messages and terminals (controls escaped)."""
    return printable_repr(subject_text(name)) or "(empty subject)"


def describe_key(cert: x509.Certificate) -> str:
    """Human description of the public key, e.g. ``"RSA 2048"``, ``"EC secp256r1"``."""
    try:
        key = cert.public_key()
    except Exception as exc:  # unsupported algorithm in the SPKI
        return f"unsupported ({exc})"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def key_problem(cert: x509.Certificate, min_rsa_bits: int) -> tuple[str, str] | None:
    """``(code, message)`` when the key is too weak or of an unsupported kind, else None.

    Accepted: RSA >= ``min_rsa_bits`` (never below 2048), EC P-256/P-384, Ed25519.
    """
    floor = max(min_rsa_bits, RSA_FLOOR)
    try:
        key = cert.public_key()
    except Exception as exc:
        return "unsupported-key", f"public key cannot be read: {exc}"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < floor:
            return "weak-key", f"RSA key of {key.key_size} bits is below the minimum of {floor}"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            return "unsupported-key", f"EC curve {key.curve.name} is not accepted (P-256 or P-384)"
        return None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return "unsupported-key", f"{describe_key(cert)} keys are not accepted (RSA, EC P-256/P-384, Ed25519)"


def basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    """The BasicConstraints extension value, or None when absent."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def is_ca(cert: x509.Certificate) -> bool:
    """True when BasicConstraints says CA:TRUE (absent extension means not a CA)."""
    bc = basic_constraints(cert)
    return bool(bc and bc.ca)


def key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    """The KeyUsage extension value, or None when absent."""
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def ext_key_usages(cert: x509.Certificate) -> tuple[x509.ObjectIdentifier, ...] | None:
    """The EKU OIDs, or None when the certificate has no EKU extension."""
    try:
        return tuple(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


def client_usage_problem(cert: x509.Certificate, allow_missing_eku: bool) -> tuple[str, str] | None:
    """``(code, message)`` when the certificate may not authenticate a TLS client.

    EKU must contain clientAuth (anyExtendedKeyUsage does not count). With
    ``allow_missing_eku`` a certificate *without* an EKU extension passes; one whose EKU
    lists other usages only (e.g. serverAuth) never does. KeyUsage, when present, must
    allow digitalSignature (the client signs the handshake).
    """
    ekus = ext_key_usages(cert)
    if ekus is None:
        if not allow_missing_eku:
            return ("no-client-usage",
                    "certificate has no extended key usage; clientAuth is required "
                    "(unsafe_allow_missing_eku = yes would accept it)")
    elif ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
        names = ", ".join(eku_name(o) for o in ekus) or "none"
        return "wrong-usage", f"extended key usage is {names}, not clientAuth"
    ku = key_usage(cert)
    if ku is not None and not ku.digital_signature:
        return "wrong-usage", "key usage does not allow digitalSignature"
    return None


def eku_name(oid: x509.ObjectIdentifier) -> str:
    """Short name of an EKU OID (``clientAuth``, ``serverAuth``…) or its dotted form."""
    names = {ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth", ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
             ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
             ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
             ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
             ExtendedKeyUsageOID.SMARTCARD_LOGON: "smartcardLogon"}
    return names.get(oid, oid.dotted_string)


def cn_values(name: x509.Name) -> list[str]:
    """Every CN attribute value in the name, in encoding order."""
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def display_cn(name: x509.Name) -> str:
    """The CNs for display, joined by ``+``, with control characters escaped."""
    return "+".join(printable_repr(v) for v in cn_values(name)) or "-"


def printable_repr(value: str) -> str:
    """The value as printable ASCII: controls, bidi and every non-ASCII character shown as
    ``\\xNN`` / ``\\uNNNN``, backslashes doubled (:func:`trust.escape.safe_text`)."""
    return safe_text(value, backslash=True, ascii_only=True)


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when the subject equals the issuer and the certificate verifies with its own key."""
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:
        return False
    return True


def not_before(cert: x509.Certificate) -> _dt.datetime:
    """notBefore as an aware UTC datetime."""
    return cert.not_valid_before_utc


def not_after(cert: x509.Certificate) -> _dt.datetime:
    """notAfter as an aware UTC datetime."""
    return cert.not_valid_after_utc
