"""OCSP for client certificates, the pure part: plan, request, response validation, cache, decision.

Nothing here does I/O or imports Twisted; ``proxy.listener.ocsp`` fetches. Every X.509 and signature
operation goes through ``cryptography`` (``x509.ocsp`` builders and loaders, the issuer's or
delegated responder's public key ``verify``); time is always passed in.

The flow for one accepted chain verdict:

1. :func:`plan_check` -> :class:`OcspPlan` (which rule, which responder, nonce or not) or None;
2. the cache (:class:`OcspCache`) or a fetch of :func:`build_request`'s bytes;
3. :func:`validate` -> :class:`OcspResult` (good / revoked / unknown / an error code);
4. :func:`decide` -> reasons and warnings under ``hard | soft``; :func:`apply` folds them into
   the verdict.
"""

from __future__ import annotations

import datetime as _dt
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, SignatureAlgorithmOID

from . import certinfo
from .verify import Reason, Verdict, direct_issuer

if TYPE_CHECKING:
    from .store import TrustGeneration

OcspMode = Literal["hard", "soft", "off"]
#: Result codes (the ``code`` of :class:`OcspResult`); also the metric's ``result`` label.
GOOD, REVOKED, UNKNOWN = "good", "revoked", "unknown"
ERROR_CODES = ("ocsp-no-responder", "ocsp-unreachable", "ocsp-timeout", "ocsp-http-error", "ocsp-malformed",
               "ocsp-error-status", "ocsp-bad-signature", "ocsp-unauthorized-responder", "ocsp-wrong-certificate",
               "ocsp-stale", "ocsp-not-yet-valid", "ocsp-nonce-mismatch")
#: Largest OCSP response accepted from a responder (bytes).
MAX_RESPONSE_BYTES = 64 * 1024
_UTC = _dt.timezone.utc


@dataclass(frozen=True)
class OcspRule:
    """``[ocsp:NAME]``: the policy for certificates issued under one CA.

    ``cas``: SHA-256 fingerprints or store file names; the rule applies when any certificate
    above the leaf in the verified chain matches (the nearest wins). ``responder``: the URL to
    POST to (None: the leaf's AIA OCSP URL). ``nonce``: send a nonce and require it echoed.
    """

    name: str
    cas: tuple[str, ...]
    mode: OcspMode = "hard"
    responder: str | None = None
    nonce: bool = True


@dataclass(frozen=True)
class OcspSettings:
    """The OCSP keys of ``[trust]`` plus the ``[ocsp:NAME]`` rules (see docs/trust.md)."""

    mode: OcspMode = "off"  # for CAs without a rule
    timeout: float = 3.0
    clock_skew: float = 300.0
    max_age: float = 3600.0
    cache_size: int = 10000
    nonce: bool = True
    rules: tuple[OcspRule, ...] = ()

    @property
    def enabled(self) -> bool:
        """False when no CA can ever be OCSP-checked (the handshake path skips all OCSP work)."""
        return self.mode != "off" or any(r.mode != "off" for r in self.rules)


@dataclass(frozen=True, eq=False)
class OcspPlan:
    """One OCSP check to make: the leaf, its issuer, the responder and the mode."""

    key: tuple[str, str]  # (leaf fingerprint, issuer fingerprint): the cache key
    leaf: x509.Certificate
    issuer: x509.Certificate
    mode: OcspMode
    url: str | None
    nonce: bool
    rule: str  # the [ocsp:NAME] name, or "trust" for the [trust] default


@dataclass(frozen=True)
class OcspResult:
    """What one responder answer (or the failure to get one) means.

    ``code`` is ``good``, ``revoked``, ``unknown`` or one of :data:`ERROR_CODES`.
    ``expires`` (epoch seconds) is when a cached answer must be fetched again; 0 for errors,
    which are never cached.
    """

    code: str
    message: str
    this_update: _dt.datetime | None = None
    next_update: _dt.datetime | None = None
    expires: float = 0.0
    responder: str | None = None

    @property
    def is_error(self) -> bool:
        """True when no usable answer was obtained (unreachable, timeout, bad response...)."""
        return self.code not in (GOOD, REVOKED, UNKNOWN)


def aia_ocsp_urls(cert: x509.Certificate) -> tuple[str, ...]:
    """The http(s) OCSP URLs of the certificate's Authority Information Access extension.

    URLs with spaces, controls or non-ASCII characters are dropped (never fetched or logged).
    """
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(d.access_location.value for d in aia
                 if d.access_method == AuthorityInformationAccessOID.OCSP
                 and isinstance(d.access_location, x509.UniformResourceIdentifier)
                 and d.access_location.value.lower().startswith(("http://", "https://"))
                 and all(0x21 <= ord(c) <= 0x7E for c in d.access_location.value))


def rule_for(chain_fps: Sequence[str], files: Sequence[str | None], settings: OcspSettings
             ) -> tuple[OcspMode, OcspRule | None]:
    """The mode (and rule) for a chain given as fingerprints (leaf first) and store files.

    ``files[i]`` is the store file of ``chain_fps[i]`` (None when not from the store). The
    nearest CA above the leaf named by a rule wins; otherwise the ``[trust]`` default applies.
    """
    for fp, file in zip(chain_fps[1:], files[1:]):
        for rule in settings.rules:
            if fp in rule.cas or (file is not None and file in rule.cas):
                return rule.mode, rule
    return settings.mode, None


def plan_check(verdict: Verdict, issuer: x509.Certificate | None, files: Sequence[str | None],
               settings: OcspSettings) -> OcspPlan | None:
    """The OCSP check an accepted verdict needs, or None (refused verdict, mode off, no issuer).

    ``issuer`` is the leaf's issuing certificate (the chain's second, or the store CA of a
    pinned certificate). ``files``: the store files of ``verdict.chain_fingerprints``.
    A plan with ``url`` None means no responder is known (:func:`no_responder`).
    """
    if not verdict.ok or issuer is None or not verdict.chain:
        return None
    fps = verdict.chain_fingerprints if len(verdict.chain_fingerprints) > 1 else (
        verdict.fingerprint, certinfo.fingerprint(issuer))
    mode, rule = rule_for(fps, files, settings)
    if mode == "off":
        return None
    leaf = verdict.chain[0]
    url = rule.responder if rule is not None and rule.responder else next(iter(aia_ocsp_urls(leaf)), None)
    nonce = rule.nonce if rule is not None else settings.nonce
    return OcspPlan(key=(verdict.fingerprint, fps[1]), leaf=leaf, issuer=issuer, mode=mode, url=url,
                    nonce=nonce, rule=rule.name if rule is not None else "trust")


def plan_for(verdict: Verdict, generation: "TrustGeneration", settings: OcspSettings) -> OcspPlan | None:
    """:func:`plan_check` with the issuer and store files looked up in ``generation``.

    The issuer is the verified chain's second certificate, or for a pinned certificate the
    store CA that signed it (a pinned certificate without one is not OCSP-checked).
    """
    if not verdict.ok or not verdict.chain:
        return None
    if len(verdict.chain) > 1:
        issuer: x509.Certificate | None = verdict.chain[1]
        fps = verdict.chain_fingerprints
    else:
        issuer = direct_issuer(verdict.chain[0], generation)
        if issuer is None:
            return None
        fps = (verdict.fingerprint, certinfo.fingerprint(issuer))
    files = [e.file if (e := generation.by_fingerprint.get(fp)) is not None else None for fp in fps]
    return plan_check(verdict, issuer, files, settings)


def no_responder(plan: OcspPlan) -> OcspResult:
    """The result when neither a rule nor the certificate's AIA names a responder."""
    return OcspResult("ocsp-no-responder", f"no OCSP responder is known for {certinfo.label(plan.leaf.subject)} "
                                           "(no AIA OCSP URL and no responder configured)")


def build_request(leaf: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None) -> bytes:
    """DER of an OCSP request for ``leaf`` (SHA-1 CertID, as RFC 5019 responders expect)."""
    b = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(Encoding.DER)


def _err(code: str, message: str, url: str | None) -> OcspResult:
    return OcspResult(code, message, responder=url)


def validate(data: bytes, leaf: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None,
             now: _dt.datetime, clock_skew: float, max_age: float, url: str | None = None) -> OcspResult:
    """Check a responder's answer for ``leaf`` and say what it means.

    Checks, in order: it parses and says ``successful``; it is signed by ``issuer`` itself or
    by a delegated responder certificate carried in the response that ``issuer`` signed, that
    has the OCSP-signing EKU and is within its dates; the ResponderID names the signer; a
    single response has the CertID of ``leaf`` (same hash algorithm, name and key hashes,
    serial); thisUpdate is not in the future and (nextUpdate, or thisUpdate + ``max_age``
    without one) is not past, both with ``clock_skew`` seconds of slack; the nonce is echoed
    when one was sent. Does not check the responder certificate's own revocation (RFC 6960
    4.2.2.2.1 leaves that to policy; certgate trusts the CA's delegation for its lifetime).
    """
    if now.tzinfo is None:
        raise ValueError("validate() needs an aware datetime for now")
    if len(data) > MAX_RESPONSE_BYTES:
        return _err("ocsp-malformed", f"the OCSP response is larger than {MAX_RESPONSE_BYTES} bytes", url)
    try:
        resp = ocsp.load_der_ocsp_response(data)
    except ValueError as exc:
        return _err("ocsp-malformed", f"the OCSP response cannot be parsed: {exc}", url)
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return _err("ocsp-error-status", f"the OCSP responder answered {resp.response_status.name.lower()}", url)
    try:
        signer, why = _signer(resp, issuer, now)
        if signer is None:
            return _err("ocsp-unauthorized-responder", why, url)
        if not _signature_ok(resp, signer):
            return _err("ocsp-bad-signature", "the OCSP response signature does not verify with the key of "
                                              f"{certinfo.label(signer.subject)}", url)
        single = _single_for(resp, leaf, issuer)
        if single is None:
            return _err("ocsp-wrong-certificate", f"the OCSP response does not answer for serial "
                                                  f"{leaf.serial_number:x} of {certinfo.label(issuer.subject)}", url)
        this, nxt = single.this_update_utc, single.next_update_utc
        status = single.certificate_status
        rev_time = single.revocation_time_utc if status == ocsp.OCSPCertStatus.REVOKED else None
        rev_reason = single.revocation_reason if status == ocsp.OCSPCertStatus.REVOKED else None
        nonce_ext = _nonce_of(resp)
    except (ValueError, TypeError) as exc:
        return _err("ocsp-malformed", f"the OCSP response cannot be read: {exc}", url)
    skew = _dt.timedelta(seconds=clock_skew)
    if this > now + skew:
        return _err("ocsp-not-yet-valid", f"the OCSP response's thisUpdate {this:%Y-%m-%d %H:%M:%S}Z is in the "
                                          "future (check the clocks)", url)
    stale_at = nxt if nxt is not None else this + _dt.timedelta(seconds=max_age)
    if now > stale_at + skew:
        what = "nextUpdate" if nxt is not None else f"thisUpdate + {max_age:g}s (no nextUpdate)"
        return _err("ocsp-stale", f"the OCSP response is stale: {what} {stale_at:%Y-%m-%d %H:%M:%S}Z has passed "
                                  "(an old answer replayed?)", url)
    if nonce is not None and nonce_ext != nonce:
        why = "does not echo the nonce" if nonce_ext is None else "carries another request's nonce"
        return _err("ocsp-nonce-mismatch", f"the OCSP response {why} (a replayed answer, or a responder that "
                                           "ignores nonces: set nonce = no for this CA)", url)
    expires = min(stale_at, now + _dt.timedelta(seconds=max_age)).timestamp()
    who = f"{certinfo.label(leaf.subject)} (serial {leaf.serial_number:x})"
    if status == ocsp.OCSPCertStatus.GOOD:
        return OcspResult(GOOD, f"OCSP: {who} is good", this, nxt, expires, url)
    if status == ocsp.OCSPCertStatus.REVOKED:
        reason = f", reason {rev_reason.name}" if rev_reason is not None else ""
        when = f" since {rev_time:%Y-%m-%d %H:%M}Z" if rev_time is not None else ""
        return OcspResult(REVOKED, f"OCSP: {who} is revoked{when}{reason}", this, nxt, expires, url)
    return OcspResult(UNKNOWN, f"OCSP: the responder does not know {who}", this, nxt, expires, url)


def _signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: _dt.datetime
            ) -> tuple[x509.Certificate | None, str]:
    """The certificate whose key must have signed ``resp``, or None and why no one may have."""
    if _names(resp, issuer):
        return issuer, ""
    for cert in resp.certificates:
        if not _names(resp, cert):
            continue
        label = certinfo.label(cert.subject)
        if cert.issuer != issuer.subject:
            return None, f"the OCSP responder certificate {label} is not issued by {certinfo.label(issuer.subject)}"
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return None, (f"the OCSP responder certificate {label} is not signed by the key of "
                          f"{certinfo.label(issuer.subject)}")
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return None, f"the OCSP responder certificate {label} lacks the OCSP-signing extended key usage"
        if not certinfo.not_before(cert) <= now <= certinfo.not_after(cert):
            return None, f"the OCSP responder certificate {label} is outside its validity dates"
        return cert, ""
    return None, ("the OCSP response is signed by a responder that is neither the issuing CA nor a "
                  "delegated responder certificate included in the response")


def _names(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """True when the response's ResponderID (by name or by key hash) designates ``cert``."""
    if resp.responder_name is not None:
        return resp.responder_name == cert.subject
    key_hash = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # SHA-1 of the key bits
    return resp.responder_key_hash == key_hash


def _signature_ok(resp: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    key = signer.public_key()
    sig, data, algo = resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if resp.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS or algo is None:
                return False  # PSS parameters are not exposed for OCSP responses: refuse
            key.verify(sig, data, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if algo is None:
                return False
            key.verify(sig, data, ec.ECDSA(algo))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(sig, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _single_for(resp: ocsp.OCSPResponse, leaf: x509.Certificate, issuer: x509.Certificate
                ) -> ocsp.OCSPSingleResponse | None:
    for single in resp.responses:
        if single.serial_number != leaf.serial_number:
            continue
        try:
            want = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, single.hash_algorithm).build()
        except (ValueError, TypeError):
            continue  # a hash algorithm cryptography will not build a CertID with
        if (single.issuer_name_hash == want.issuer_name_hash
                and single.issuer_key_hash == want.issuer_key_hash):
            return single
    return None


def _nonce_of(resp: ocsp.OCSPResponse) -> bytes | None:
    try:
        return resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def decide(mode: OcspMode, result: OcspResult) -> tuple[tuple[Reason, ...], tuple[Reason, ...]]:
    """(reasons, warnings) for ``result`` under ``mode``.

    ``revoked`` refuses in every mode. ``unknown`` and every error refuse under ``hard`` and
    only warn under ``soft``. ``good`` adds nothing. ``off`` never gets here (no plan).
    """
    if result.code == GOOD or mode == "off":
        return (), ()
    code = "ocsp-revoked" if result.code == REVOKED else (
        "ocsp-unknown" if result.code == UNKNOWN else result.code)
    r = Reason(code, result.message)
    if result.code == REVOKED or mode == "hard":
        return (r,), ()
    return (), (Reason(code, result.message + " (accepted: ocsp = soft)"),)


def apply(verdict: Verdict, reasons: Sequence[Reason], warnings: Sequence[Reason]) -> Verdict:
    """``verdict`` with OCSP reasons/warnings added; a reason makes it a refusal."""
    if not reasons and not warnings:
        return verdict
    if not reasons:
        return replace(verdict, warnings=verdict.warnings + tuple(warnings))
    return replace(verdict, ok=False, reasons=verdict.reasons + tuple(reasons),
                   warnings=verdict.warnings + tuple(warnings), chain=(), anchor_fingerprint=None,
                   store_files=(), chain_fingerprints=())


class OcspCache:
    """Validated OCSP answers by (leaf, issuer) fingerprints, bounded, oldest evicted first.

    An answer is served until its ``expires`` (nextUpdate, or thisUpdate + max_age without
    one, and never longer than max_age after it was fetched). Errors are never stored.
    """

    def __init__(self, maxsize: int = 10000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[str, str], OcspResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str], now: float) -> OcspResult | None:
        """The cached answer for ``key`` if still fresh at ``now`` (epoch seconds)."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if now >= hit.expires:
            del self._entries[key]
            return None
        return hit

    def put(self, key: tuple[str, str], result: OcspResult, now: float) -> bool:
        """Store a fresh, non-error answer; True when stored."""
        if result.is_error or result.expires <= now:
            return False
        self._entries.pop(key, None)
        while len(self._entries) >= self.maxsize:
            self._entries.popitem(last=False)
        self._entries[key] = result
        return True

    def clear(self) -> None:
        """Forget every answer."""
        self._entries.clear()


def to_datetime(epoch: float) -> _dt.datetime:
    """Epoch seconds -> aware UTC datetime."""
    return _dt.datetime.fromtimestamp(epoch, _UTC)
