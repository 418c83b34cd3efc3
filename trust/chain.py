"""A small, bounded path builder used to *explain* chain failures (and for Ed25519 CAs).

cryptography's Rust verifier decides chains in :mod:`trust.verify`, but its errors are
opaque ("candidates exhausted: signature does not match") and its WebPKI profile forbids
Ed25519 CA keys. This module walks the same candidates in Python to say precisely which
certificate failed and why. It checks, for each issuer: name and signature (never the
name alone), CA:TRUE, keyCertSign, validity dates, path length, EKU, key strength,
signature hash, unknown critical extensions; and the overall depth. It does not check
name constraints or certificate policies: a chain carrying a critical one is refused.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from . import certinfo

#: Extensions this builder understands when they are critical.
_KNOWN_CRITICAL = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
                   ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
                   ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.CERTIFICATE_POLICIES}
#: Ranking of failures: when several candidate paths fail, report the most specific one.
_RANK = {"expired": 6, "not-yet-valid": 6, "issuer-not-ca": 5, "weak-key": 5, "unsupported-key": 5,
         "weak-signature": 5, "wrong-usage": 5, "chain-invalid": 4, "chain-too-deep": 3,
         "bad-signature": 2, "unknown-ca": 1}
_WEAK_HASHES = (hashes.SHA1, hashes.MD5)


@dataclass(frozen=True)
class PathFailure:
    """Why no acceptable path was found: a stable reason code and a message."""

    code: str
    message: str


def describe(cert: x509.Certificate) -> str:
    """Short label of a certificate for messages: its RFC 4514 subject."""
    return certinfo.label(cert.subject)


def weak_signature(cert: x509.Certificate) -> str | None:
    """A message when the certificate is signed with MD5 or SHA-1, else None."""
    try:
        alg = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return f"certificate {describe(cert)} uses an unsupported signature algorithm"
    if isinstance(alg, _WEAK_HASHES):
        return f"certificate {describe(cert)} is signed with {alg.name}, which is too weak"
    return None


def unknown_critical(cert: x509.Certificate) -> str | None:
    """A message naming a critical extension this builder does not process, else None."""
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _KNOWN_CRITICAL:
            name = getattr(ext.oid, "_name", None) or ext.oid.dotted_string
            return f"certificate {describe(cert)} has an unsupported critical extension {name}"
    return None


def build_path(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
               anchors: Sequence[x509.Certificate], *, now: _dt.datetime, max_depth: int,
               min_rsa_bits: int, budget: int = 256
               ) -> tuple[tuple[x509.Certificate, ...] | None, PathFailure | None]:
    """Find leaf -> ... -> anchor using ``intermediates`` and ``anchors``.

    Returns ``(chain, None)`` on success or ``(None, failure)``. The leaf itself is not
    checked here (dates, usage, key: :mod:`trust.verify` does that). ``max_depth`` is the
    maximum number of certificates above the leaf, anchor included; ``budget`` bounds
    the number of signature checks so a pathological chain costs bounded CPU.
    """
    anchor_fps = {certinfo.fingerprint(a): a for a in anchors}
    pool = list(anchors) + [c for c in intermediates if certinfo.fingerprint(c) not in anchor_fps]
    failures: list[PathFailure] = []
    work = [budget]

    def fail(code: str, message: str) -> None:
        failures.append(PathFailure(code, message))

    def walk(path: list[x509.Certificate]) -> tuple[x509.Certificate, ...] | None:
        child = path[-1]
        candidates = [c for c in pool if c.subject == child.issuer and all(c is not p for p in path)]
        if not candidates:
            where = "the trust store" if len(path) == 1 else "the trust store or the chain sent"
            fail("unknown-ca", f"issuer {certinfo.label(child.issuer)} of {describe(child)} "
                               f"is not in {where}")
            return None
        for cand in candidates:
            if work[0] <= 0:
                fail("chain-invalid", "chain too complex: gave up after too many signature checks")
                return None
            work[0] -= 1
            try:
                child.verify_directly_issued_by(cand)
            except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
                fail("bad-signature", f"{describe(child)} names {describe(cand)} as its issuer but is not "
                                      "signed by that certificate's key (rogue or re-keyed CA)")
                continue
            problem = _issuer_problem(cand, path, now=now, max_depth=max_depth, min_rsa_bits=min_rsa_bits)
            if problem:
                fail(*problem)
                continue
            if certinfo.fingerprint(cand) in anchor_fps:
                return tuple(path + [cand])
            found = walk(path + [cand])
            if found:
                return found
        return None

    chain = walk([leaf])
    if chain:
        return chain, None
    best = max(failures, key=lambda f: _RANK.get(f.code, 0)) if failures else PathFailure(
        "unknown-ca", "no path to a trusted CA")
    return None, best


def _issuer_problem(cand: x509.Certificate, path: list[x509.Certificate], *, now: _dt.datetime,
                    max_depth: int, min_rsa_bits: int) -> tuple[str, str] | None:
    label = describe(cand)
    above = len(path)  # certificates above the leaf once cand is added
    if above > max_depth:
        return "chain-too-deep", (f"the chain needs more than {max_depth} certificate(s) above the "
                                  f"client certificate (max_depth = {max_depth})")
    bc = certinfo.basic_constraints(cand)
    if bc is None or not bc.ca:
        return "issuer-not-ca", f"{label} signed {describe(path[-1])} but is not a CA (no CA:TRUE)"
    ku = certinfo.key_usage(cand)
    if ku is not None and not ku.key_cert_sign:
        return "issuer-not-ca", f"{label} is a CA whose key usage does not allow keyCertSign"
    below = len(path) - 1  # intermediates between cand and the leaf
    if bc.path_length is not None and below > bc.path_length:
        return "chain-invalid", f"{label} allows a path length of {bc.path_length}, the chain has {below}"
    if now < certinfo.not_before(cand):
        return "not-yet-valid", f"issuing certificate {label} is not valid before {certinfo.not_before(cand):%Y-%m-%d %H:%M}Z"
    if now > certinfo.not_after(cand):
        return "expired", f"issuing certificate {label} expired on {certinfo.not_after(cand):%Y-%m-%d %H:%M}Z"
    ekus = certinfo.ext_key_usages(cand)
    if ekus is not None and not ({ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
                                 & set(ekus)):
        return "wrong-usage", f"CA {label} restricts its extended key usage and clientAuth is not included"
    kp = certinfo.key_problem(cand, min_rsa_bits)
    if kp:
        return kp[0], f"issuing certificate {label}: {kp[1]}"
    weak = weak_signature(path[-1])
    if weak:
        return "weak-signature", weak
    crit = unknown_critical(cand)
    if crit:
        return "chain-invalid", crit
    return None
