"""The one decision: is this client certificate acceptable now? -> :class:`Verdict`.

:func:`verify` is the only function that accepts or refuses a client certificate; the
TLS layer and the gate consume its verdict. :class:`VerdictCache` memoises verdicts for
the handshake hot path.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Literal, Sequence

from cryptography import x509
from cryptography.x509.verification import (Criticality, ExtensionPolicy, PolicyBuilder,
                                            VerificationError)

from . import certinfo, chain as _chain
from .presented import PresentedCertificate
from .store import StoreEntry, TrustGeneration, issuer_key

CrlMode = Literal["hard", "soft", "off"]
#: A client sending more certificates than this is refused before any path building.
MAX_INTERMEDIATES = 16

_A = Criticality.AGNOSTIC
# cryptography's WebPKI profile, relaxed for enterprise / smart-card client certificates:
# CN-only subjects (no SAN), critical EKU, no AKI. EKU, CA:FALSE and KeyUsage of the leaf
# are checked by verify() itself with precise reasons. Unknown critical extensions stay refused.
_EE_POLICY = (ExtensionPolicy.webpki_defaults_ee()
              .may_be_present(x509.SubjectAlternativeName, _A, None)
              .may_be_present(x509.ExtendedKeyUsage, _A, None)
              .may_be_present(x509.AuthorityKeyIdentifier, _A, None)
              .may_be_present(x509.BasicConstraints, _A, None)
              .may_be_present(x509.KeyUsage, _A, None))


def _ca_key_usage(policy: object, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    # Absent KeyUsage is tolerated (legacy enterprise CAs); present, it must allow keyCertSign.
    if ku is not None and not ku.key_cert_sign:
        raise ValueError("CA key usage does not allow keyCertSign")


# CAs: BasicConstraints CA:TRUE stays required; old enterprise CAs may lack AKI/SKI/KeyUsage.
_CA_POLICY = (ExtensionPolicy.webpki_defaults_ca()
              .may_be_present(x509.AuthorityKeyIdentifier, _A, None)
              .may_be_present(x509.SubjectKeyIdentifier, _A, None)
              .may_be_present(x509.KeyUsage, _A, _ca_key_usage))


@dataclass(frozen=True)
class VerifyPolicy:
    """What :func:`verify` requires beyond a chain to the store (built from TrustSettings).

    ``max_depth``: certificates allowed above the leaf, anchor included (1..16).
    ``crl``: ``hard`` refuses revoked certificates and expired CRLs; ``soft`` refuses
    revoked certificates and only warns about an expired CRL; ``off`` ignores CRLs.
    A CA without any CRL in the store is not revocation-checked in any mode.
    """

    max_depth: int = 4
    min_rsa_bits: int = 2048
    crl: CrlMode = "hard"
    unsafe_allow_missing_eku: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= 16:
            raise ValueError(f"max_depth {self.max_depth} is outside 1..16")
        if not 2048 <= self.min_rsa_bits <= 16384:
            raise ValueError(f"min_rsa_bits {self.min_rsa_bits} is outside 2048..16384")
        if self.crl not in ("hard", "soft", "off"):
            raise ValueError(f"crl {self.crl!r} is not one of hard, soft, off")


@dataclass(frozen=True)
class Reason:
    """A stable machine code (see docs/trust.md) and an operator-readable message."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`verify` for one leaf (+ chain) against one generation.

    ``ok`` is True only when ``reasons`` is empty. ``warnings`` never refuse (e.g. an
    expired CRL under ``crl = soft``). ``chain`` is leaf..anchor when ok (a pinned
    certificate: just the leaf). ``valid_until``: the verdict must be recomputed after
    this instant (earliest notAfter in the chain, CRL nextUpdate, a future notBefore);
    None when no date can change it. ``store_files``: the store files that trusted it.
    """

    ok: bool
    reasons: tuple[Reason, ...]
    fingerprint: str
    subject: str
    issuer: str
    serial: int
    not_before: _dt.datetime | None
    not_after: _dt.datetime | None
    chain: tuple[x509.Certificate, ...] = field(repr=False)
    anchor_fingerprint: str | None
    pinned: bool
    valid_until: _dt.datetime | None
    warnings: tuple[Reason, ...] = ()
    store_files: tuple[str, ...] = ()
    chain_fingerprints: tuple[str, ...] = ()
    valid_until_ts: float | None = field(default=None, repr=False)

    @property
    def codes(self) -> tuple[str, ...]:
        """The reason codes, in order."""
        return tuple(r.code for r in self.reasons)

    @property
    def summary(self) -> str:
        """One line saying why: accepted via which store file, or every refusal reason."""
        if self.ok:
            via = ", ".join(self.store_files) or "?"
            how = "pinned certificate" if self.pinned else "chain to"
            extra = "".join(f" (warning: {w.message})" for w in self.warnings)
            return f"accepted: {certinfo.printable_repr(self.subject) or '(empty subject)'} ({how} {via}){extra}"
        return "refused: " + "; ".join(str(r) for r in self.reasons)


def _refusal(code: str, message: str) -> Verdict:
    return Verdict(ok=False, reasons=(Reason(code, message),), fingerprint="", subject="", issuer="",
                   serial=0, not_before=None, not_after=None, chain=(), anchor_fingerprint=None,
                   pinned=False, valid_until=None)


NO_CERTIFICATE = _refusal("no-certificate", "no client certificate was presented")


def verify(leaf: x509.Certificate | None, intermediates: Sequence[x509.Certificate],
           generation: TrustGeneration, policy: VerifyPolicy, *, now: _dt.datetime) -> Verdict:
    """Decide whether ``leaf`` (with the ``intermediates`` the client sent) is acceptable.

    Checks, all reported together: leaf dates, leaf not a CA, key strength, client usage
    (EKU clientAuth; no EKU only with ``unsafe_allow_missing_eku``); then either an exact
    SHA-256 pin in the store, or a chain to a store CA (cryptography's verifier with a
    relaxed extension policy, max depth, explained by :mod:`trust.chain` on failure);
    then CRLs of the store for every certificate below the anchor (and for a pinned
    certificate whose issuer is a store CA). Trust is never matched by issuer name alone.
    ``now`` must be an aware datetime. Does not map the certificate to an account.
    """
    if now.tzinfo is None:
        raise ValueError("verify() needs an aware datetime for now")
    if leaf is None:
        return NO_CERTIFICATE
    try:
        _ = leaf.extensions, [c.extensions for c in intermediates]
    except ValueError as exc:
        return _refusal("malformed", f"a certificate extension cannot be parsed: {exc}")
    intermediates = [c for c in intermediates if c != leaf]  # some stacks repeat the leaf in the chain
    fp = certinfo.fingerprint(leaf)
    pinned_entry = generation.pinned_entry(fp)
    reasons = _leaf_reasons(leaf, pinned_entry, policy, now)
    warnings: list[Reason] = []
    if certinfo.ext_key_usages(leaf) is None and not any(r.code == "no-client-usage" for r in reasons):
        warnings.append(Reason("no-client-usage", "accepted without extended key usage "
                                                  "(unsafe_allow_missing_eku = yes)"))
    chain: tuple[x509.Certificate, ...] = ()
    crl_chain: tuple[x509.Certificate, ...] = ()
    if pinned_entry is not None:
        chain = (leaf,)
        issuer_ca = direct_issuer(leaf, generation)
        crl_chain = (leaf, issuer_ca) if issuer_ca is not None else ()
    elif len(intermediates) > MAX_INTERMEDIATES:
        reasons.append(Reason("chain-too-deep", f"the client sent {len(intermediates)} chain certificates "
                                                f"(at most {MAX_INTERMEDIATES} are considered)"))
    elif generation.anchors is None:
        reasons.append(Reason("unknown-ca", "the trust store holds no CA certificate and this certificate "
                                            "is not pinned"))
    else:
        chain, chain_reasons = _verify_chain(leaf, intermediates, generation, policy, now, not reasons)
        reasons += chain_reasons
        crl_chain = chain
    next_updates: list[_dt.datetime] = []
    if crl_chain and policy.crl != "off":
        _check_crls(crl_chain, generation, policy, now, reasons, warnings, next_updates)
    ok = not reasons
    instants = [d for c in (chain or (leaf, *intermediates))
                for d in (certinfo.not_before(c), certinfo.not_after(c))] + next_updates
    future = [d for d in instants if d > now]
    valid_until = min(future) if future else None
    fps = tuple(certinfo.fingerprint(c) for c in chain) if ok else ()
    files = tuple(e.file for e in (generation.by_fingerprint.get(f) for f in fps) if e is not None)
    return Verdict(
        ok=ok, reasons=tuple(reasons), fingerprint=fp, subject=certinfo.subject_text(leaf.subject),
        issuer=certinfo.subject_text(leaf.issuer), serial=leaf.serial_number,
        not_before=certinfo.not_before(leaf), not_after=certinfo.not_after(leaf),
        chain=chain if ok else (), anchor_fingerprint=fps[-1] if ok else None,
        pinned=pinned_entry is not None, valid_until=valid_until, warnings=tuple(warnings),
        store_files=files, chain_fingerprints=fps,
        valid_until_ts=valid_until.timestamp() if valid_until else None)


def _leaf_reasons(leaf: x509.Certificate, pinned: StoreEntry | None, policy: VerifyPolicy,
                  now: _dt.datetime) -> list[Reason]:
    reasons: list[Reason] = []
    nb, na = certinfo.not_before(leaf), certinfo.not_after(leaf)
    if now < nb:
        reasons.append(Reason("not-yet-valid", f"certificate is not valid before {nb:%Y-%m-%d %H:%M:%S}Z"))
    elif now > na:
        if pinned is not None:
            reasons.append(Reason("pinned-expired", f"pinned certificate {pinned.file} expired on "
                                                    f"{na:%Y-%m-%d %H:%M:%S}Z"))
        else:
            reasons.append(Reason("expired", f"certificate expired on {na:%Y-%m-%d %H:%M:%S}Z"))
    if certinfo.is_ca(leaf):
        reasons.append(Reason("ca-leaf", "certificate is a CA (BasicConstraints CA:TRUE) and cannot "
                                         "authenticate a client"))
    kp = certinfo.key_problem(leaf, policy.min_rsa_bits)
    if kp:
        reasons.append(Reason(*kp))
    usage = certinfo.client_usage_problem(leaf, policy.unsafe_allow_missing_eku)
    if usage:
        reasons.append(Reason(*usage))
    weak = _chain.weak_signature(leaf)
    if weak and pinned is None:
        reasons.append(Reason("weak-signature", weak))
    return reasons


def _verify_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                  generation: TrustGeneration, policy: VerifyPolicy, now: _dt.datetime, leaf_ok: bool
                  ) -> tuple[tuple[x509.Certificate, ...], list[Reason]]:
    rust_error = ""
    if leaf_ok:
        assert generation.anchors is not None
        verifier = (PolicyBuilder().store(generation.anchors).time(now)
                    .max_chain_depth(policy.max_depth - 1)
                    .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
                    .build_client_verifier())
        try:
            chain = tuple(verifier.verify(leaf, list(intermediates)).chain)
        except VerificationError as exc:
            rust_error = str(exc)
        else:
            reasons = [Reason(kp[0], f"issuing certificate {_chain.describe(c)}: {kp[1]}")
                       for c in chain[1:] if (kp := certinfo.key_problem(c, policy.min_rsa_bits))]
            return chain, reasons
    path, failure = _chain.build_path(leaf, intermediates, generation.ca_certs, now=now,
                                      max_depth=policy.max_depth, min_rsa_bits=policy.min_rsa_bits)
    if path is None:
        assert failure is not None
        return (), [Reason(failure.code, failure.message)]
    if not leaf_ok:
        return (), []  # the leaf's own reasons already refuse it
    if "Ed25519" in rust_error:
        # The WebPKI profile forbids Ed25519 CA keys; the Python builder checked this path.
        return path, []
    return (), [Reason("chain-invalid", f"the X.509 path validator refused the chain: {rust_error}")]


def direct_issuer(leaf: x509.Certificate, generation: TrustGeneration) -> x509.Certificate | None:
    """The store CA whose key signed ``leaf`` (name match *and* signature), or None."""
    for ca in generation.ca_certs:
        if ca.subject == leaf.issuer:
            try:
                leaf.verify_directly_issued_by(ca)
            except Exception:
                continue
            return ca
    return None


def _check_crls(chain: Sequence[x509.Certificate], generation: TrustGeneration, policy: VerifyPolicy,
                now: _dt.datetime, reasons: list[Reason], warnings: list[Reason],
                next_updates: list[_dt.datetime]) -> None:
    for child, parent in zip(chain, chain[1:]):
        entries = generation.crls_by_issuer.get(issuer_key(parent), ())
        if not entries:
            continue
        for e in entries:
            assert e.crl is not None
            revoked = e.crl.get_revoked_certificate_by_serial_number(child.serial_number)
            if revoked is not None:
                reasons.append(Reason("revoked", f"certificate {_chain.describe(child)} (serial "
                                                 f"{child.serial_number:x}) is revoked by {e.file} since "
                                                 f"{revoked.revocation_date_utc:%Y-%m-%d %H:%M}Z"))
                break
        freshest = max(entries, key=lambda e: e.not_after or _dt.datetime.max.replace(tzinfo=_dt.timezone.utc))
        if freshest.not_after is not None and freshest.not_after < now:
            r = Reason("crl-expired", f"CRL {freshest.file} of {certinfo.printable_repr(freshest.issuer)} expired on "
                                      f"{freshest.not_after:%Y-%m-%d %H:%M}Z (nextUpdate passed)")
            (reasons if policy.crl == "hard" else warnings).append(r)
        elif freshest.not_after is not None:
            next_updates.append(freshest.not_after)


class VerdictCache:
    """Memoised :func:`verify` for the TLS handshake hot path.

    Keyed by SHA-256 over the leaf and chain DER (computed once, by the
    :class:`~trust.presented.PresentedCertificate`), the generation digest and the policy.
    A hit costs one dict lookup and one float comparison with the verdict's
    ``valid_until``; past that instant the verdict is recomputed. Switching to a
    generation with another digest empties the cache. Oldest entries are evicted first.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._entries: dict[tuple[bytes, VerifyPolicy], tuple[float, Verdict]] = {}
        self._digest: str | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every cached verdict."""
        self._entries.clear()

    def get_or_verify(self, cert: PresentedCertificate | None, generation: TrustGeneration,
                      policy: VerifyPolicy, now: float) -> Verdict:
        """The verdict for this presented certificate (leaf and chain) at ``now`` (epoch seconds).

        None means no certificate. A leaf or chain that does not parse gives a ``malformed``
        refusal (cached like any verdict). A hit parses nothing: the key is ``cert.cache_key``.
        """
        if generation.digest != self._digest:
            self._entries.clear()
            self._digest = generation.digest
        if cert is None or not cert.der:
            return NO_CERTIFICATE
        key = (cert.cache_key, policy)
        hit = self._entries.get(key)
        if hit is not None and now < hit[0]:
            self.hits += 1
            return hit[1]
        self.misses += 1
        verdict = self._compute(cert, generation, policy, now)
        if hit is None and len(self._entries) >= self.maxsize:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (verdict.valid_until_ts if verdict.valid_until_ts is not None else float("inf"),
                              verdict)
        return verdict

    @staticmethod
    def _compute(cert: PresentedCertificate, generation: TrustGeneration, policy: VerifyPolicy,
                 now: float) -> Verdict:
        try:
            leaf = cert.leaf
            inters = cert.intermediates
            _ = leaf.extensions, [c.extensions for c in inters]
        except ValueError as exc:
            return _refusal("malformed", f"the certificate cannot be parsed: {exc}")
        return verify(leaf, inters, generation, policy,
                      now=_dt.datetime.fromtimestamp(now, _dt.timezone.utc))
