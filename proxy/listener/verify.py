"""The in-handshake half of client-certificate checking: collect the chain, ask ``trust``.

OpenSSL holds no trust anchor, so it cannot make a decision of its own; the verify
callback of every context (one :class:`HandshakeVerifier` per trust generation) stashes
the certificates OpenSSL walks (depth > 0) and, at the *last* depth-0 call (the one with
``preverify_ok == 1`` that ends OpenSSL's walk; by then every depth has been seen),
computes the one ``trust`` verdict through the shared :class:`trust.verify.VerdictCache`:

* ``need``: returns the verdict (and that the certificate maps to an account); a refused
  certificate fails the handshake with an alert, and the reason is logged;
* ``want``: always returns true and records the verdict, so the person can be told why.

OCSP (when ``[trust] ocsp`` or an ``[ocsp:NAME]`` rule applies to an accepted chain): a
fresh cached answer is folded into the verdict right here, so a revoked certificate fails a
``need`` handshake with the ``certificate_revoked`` alert. Without one, the fetch starts
here and the record keeps its Deferred (``ocsp_wait``); :func:`proxy.listener.tls.identify` then
holds the connection's identity until the answer or the ``ocsp_timeout`` deadline.

With ``mapping = ldap`` the account comes from a :class:`proxy.listener.directory.DirectoryMapper`:
a cached answer decides inside the handshake like any mapping; otherwise the record is
``pending`` and :func:`proxy.listener.tls.identify` asks the directory after the handshake.

The client certificate becomes one :class:`trust.presented.PresentedCertificate` here, at
the final depth-0 call: its DER leaves OpenSSL once and its leaf is parsed once (or not at
all when another open connection presented the same chain: the value is shared); the verdict
cache, the mapping, OCSP, the directory lookup and (through :func:`proxy.listener.tls.identify`)
the connection's identity and its sessions all read that value.

Per-connection state (the certificate, the verdict, the refusal's X509 error for the alert)
lives in the connection's own :class:`HandshakeRecord` in :data:`RECORDS`, keyed weakly by
the ``SSL.Connection``; the verifier itself is shared by every connection of a generation
and keeps no per-connection state.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from OpenSSL import SSL, crypto
from twisted.logger import Logger

from proxy.clock import Clock
from trust.escape import safe_text
from trust.mapping import MappingResult
from trust.presented import PresentedCertificate
from trust.store import TrustGeneration
from trust.verify import Verdict, VerifyPolicy

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred

    from proxy.listener.directory import DirectoryMapper
    from proxy.listener.ocsp import OcspChecker
    from trust.ocsp import OcspPlan, OcspResult

_log = Logger(namespace="certgate.tls")
_ASN1 = crypto.FILETYPE_ASN1
#: Mapping results memoised per verifier (per trust generation); cleared when full.
_MAPPING_MEMO_MAX = 4096
#: trust reason code -> OpenSSL verify error, so a need-mode refusal sends a precise TLS
#: alert (unknown_ca, certificate_expired, certificate_revoked, unsupported_certificate);
#: anything else is X509_V_ERR_CERT_REJECTED (alert bad_certificate).
X509_ERRORS = {"unknown-ca": 20, "expired": 10, "pinned-expired": 10, "not-yet-valid": 9, "revoked": 23,
               "ocsp-revoked": 23, "wrong-usage": 26, "no-client-usage": 26}
X509_V_ERR_CERT_REJECTED = 28


class VerdictSource(Protocol):
    """A :class:`trust.verify.VerdictCache`-like memo of trust verdicts."""

    def get_or_verify(self, cert: PresentedCertificate | None, generation: TrustGeneration,
                      policy: VerifyPolicy, now: float) -> Verdict: ...


#: The account mapping of an accepted certificate (``trust.mapping.map_presented`` with settings).
Mapper = Callable[[PresentedCertificate], MappingResult]


def x509_error_for(verdict: Verdict | None) -> int:
    """The OpenSSL verify error that best names why ``verdict`` (or the mapping) refuses."""
    for reason in (verdict.reasons if verdict is not None else ()):
        code = X509_ERRORS.get(reason.code)
        if code is not None:
            return code
    return X509_V_ERR_CERT_REJECTED


@dataclass(slots=True, eq=False)
class HandshakeRecord:
    """What the verify callback learnt about one connection's handshake (this connection only)."""

    verifier: "HandshakeVerifier"
    chain: dict[int, bytes] = field(default_factory=dict)  # depth -> DER (depth >= 1)
    #: the client certificate, made once at the final depth-0 call (or by identify())
    presented: PresentedCertificate | None = None
    #: OpenSSL's own object for that leaf (compared, never re-encoded, by identify())
    leaf_x509: crypto.X509 | None = None
    verdict: Verdict | None = None
    mapping: MappingResult | None = None  # only when the verdict is ok
    pending: bool = False  # mapping = ldap and not cached: identify() asks the directory
    decision: bool | None = None
    calls: int = 0
    ocsp_plan: "OcspPlan | None" = None  # the plan of a pending OCSP fetch
    ocsp_wait: "Deferred[OcspResult] | None" = None  # that fetch
    #: the X509 verify error of this connection's refusal: the TLS alert it gets
    refusal_error: int | None = None

    def chain_ders(self) -> tuple[bytes, ...]:
        """The certificates above the leaf, nearest first, as OpenSSL walked them."""
        return tuple(self.chain[d] for d in sorted(self.chain))


#: SSL.Connection -> its record; entries vanish with the connection.
RECORDS: "weakref.WeakKeyDictionary[SSL.Connection, HandshakeRecord]" = weakref.WeakKeyDictionary()


class HandshakeVerifier:
    """The verify callback of one trust generation (shared by its default and SNI contexts).

    ``refusal_sink(client_ip, reason)``, when set (by the service), hears of every refusal.
    ``verdicts`` memoises verdicts; ``mapper`` maps an accepted certificate to an account;
    ``clock`` gives epoch seconds. Keeps no per-connection state (see :class:`HandshakeRecord`).
    """

    refusal_sink: "Callable[[str, str], None] | None" = None

    def __init__(self, *, generation: TrustGeneration, policy: VerifyPolicy, verdicts: VerdictSource,
                 mapper: Mapper, client_auth: str, clock: Clock, log: Logger | None = None,
                 ocsp: "OcspChecker | None" = None, directory: "DirectoryMapper | None" = None) -> None:
        self.generation = generation
        #: the OCSP checker when OCSP is enabled for some CA, else None
        self.ocsp = ocsp if ocsp is not None and ocsp.settings.enabled else None
        #: the directory when mapping = ldap: the account comes from there
        self.directory = directory
        self.policy = policy
        self.verdicts = verdicts
        self.mapper = mapper
        self.client_auth = client_auth
        self.clock = clock
        self.log = log or _log
        self._mapping_memo: dict[str, MappingResult] = {}
        self._plan_memo: dict[tuple[str, ...], OcspPlan | None] = {}  # chain fingerprints -> plan
        self.refused = 0  # handshakes refused in need mode (for tests/metrics)

    # -- per connection
    def register(self, conn: SSL.Connection) -> HandshakeRecord:
        """Start the record of a new connection made from one of this verifier's contexts."""
        rec = HandshakeRecord(self)
        RECORDS[conn] = rec
        return rec

    @staticmethod
    def refusal_error_of(conn: SSL.Connection) -> int | None:
        """The X509 error of ``conn``'s refusal (read by the context's alert shim), or None."""
        rec = RECORDS.get(conn)
        return rec.refusal_error if rec is not None else None

    def verdict_for(self, cert: PresentedCertificate, now: float) -> Verdict:
        """The (cached) trust verdict for this certificate under this generation."""
        return self.verdicts.get_or_verify(cert, self.generation, self.policy, now)

    def mapping_for(self, verdict: Verdict, cert: PresentedCertificate) -> MappingResult:
        """The account mapping of an accepted certificate (memoised by fingerprint)."""
        hit = self._mapping_memo.get(verdict.fingerprint)
        if hit is not None:
            return hit
        result = self.mapper(cert)
        if len(self._mapping_memo) >= _MAPPING_MEMO_MAX:
            self._mapping_memo.clear()
        self._mapping_memo[verdict.fingerprint] = result
        return result

    def decide(self, rec: HandshakeRecord, cert: PresentedCertificate, now: float) -> bool:
        """Compute and record the verdict (and mapping) for ``rec``; the need-mode answer.

        With OCSP, a cached answer is folded into the verdict; otherwise a fetch is started
        and recorded in ``rec.ocsp_wait`` (the answer is provisionally yes: see
        :func:`proxy.listener.tls.identify`).
        """
        verdict = self.verdict_for(cert, now)
        rec.ocsp_plan = rec.ocsp_wait = None
        rec.pending = False
        mapping: MappingResult | None
        if verdict.ok and self.directory is not None:
            mapping = self.directory.peek(verdict.fingerprint)
            if mapping is None:
                # the account comes after the handshake (identify() asks the directory); OCSP
                # is asked meanwhile, as for any certificate that may be accepted
                if self.ocsp is not None:
                    verdict = self._with_ocsp(rec, verdict, now)
                rec.presented, rec.verdict, rec.mapping = cert, verdict, None
                rec.pending = bool(verdict.ok)
                return bool(verdict.ok)
        else:
            mapping = self.mapping_for(verdict, cert) if verdict.ok else None
        if mapping is not None and mapping.account is not None and self.ocsp is not None:
            # Only certificates that would otherwise be accepted are worth asking about.
            verdict = self._with_ocsp(rec, verdict, now)
        rec.presented, rec.verdict = cert, verdict
        rec.mapping = mapping if verdict.ok else None
        return bool(verdict.ok and rec.mapping is not None and rec.mapping.account is not None)

    def _with_ocsp(self, rec: HandshakeRecord, verdict: Verdict, now: float) -> Verdict:
        from trust import ocsp as O

        ocsp = self.ocsp
        assert ocsp is not None
        key = verdict.chain_fingerprints
        if key in self._plan_memo:
            plan = self._plan_memo[key]
        else:
            plan = O.plan_for(verdict, self.generation, ocsp.settings)
            if len(self._plan_memo) >= _MAPPING_MEMO_MAX:
                self._plan_memo.clear()
            self._plan_memo[key] = plan
        if plan is None:
            return verdict
        result = ocsp.cached(plan, now)
        if result is None:
            rec.ocsp_plan, rec.ocsp_wait = plan, ocsp.fetch(plan)
            return verdict
        return O.apply(verdict, *O.decide(plan.mode, result))

    def _refuse(self, rec: HandshakeRecord, error: int) -> bool:
        rec.refusal_error = error
        return False

    # -- the OpenSSL callback
    def __call__(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, preverify_ok: int) -> bool:
        rec = RECORDS.get(conn)
        if rec is None or rec.verifier is not self:
            return False  # not a connection this verifier's state created: fail closed
        rec.calls += 1
        if depth > 0:
            if depth not in rec.chain:
                rec.chain[depth] = crypto.dump_certificate(_ASN1, cert)
            return True
        if rec.decision is not None:
            if not rec.decision and (self.client_auth != "want" or rec.verdict is None):
                return self._refuse(rec, x509_error_for(rec.verdict))
            return True
        if not preverify_ok:
            # An OpenSSL complaint about the leaf before it walked the whole chain (e.g.
            # its purpose check): ignored; trust decides at the final depth-0 call.
            return True
        try:
            # the one place the client certificate leaves OpenSSL and is parsed
            presented = PresentedCertificate.shared(crypto.dump_certificate(_ASN1, cert), rec.chain_ders())
            rec.leaf_x509 = cert
            ok = self.decide(rec, presented, self.clock.seconds())
        except Exception:  # a bug must not let a certificate through: refuse, in every mode
            self.log.failure("certificate verification failed unexpectedly; refusing the handshake")
            rec.decision = False
            return self._refuse(rec, X509_V_ERR_CERT_REJECTED)
        rec.decision = ok
        if ok or self.client_auth == "want":
            return True
        self.refused += 1
        self._log_refusal(conn, rec)
        return self._refuse(rec, x509_error_for(rec.verdict))

    def _log_refusal(self, conn: SSL.Connection, rec: HandshakeRecord) -> None:
        peer = "?"
        host = "?"
        try:
            app = conn.get_app_data()  # TLSServer, or TLSMemoryBIOProtocol (whose transport is TCP)
            addr = getattr(app, "transport", app).getPeer()
            host = addr.host
            peer = f"{addr.host}:{addr.port}"
        except Exception:
            pass
        v = rec.verdict
        assert v is not None
        sink = HandshakeVerifier.refusal_sink
        if sink is not None:
            codes = v.codes if not v.ok else ()
            sink(host, (codes[0] if codes else "untrusted") if not v.ok else "unmapped")
        why = v.summary if not v.ok else f"maps to no account: {rec.mapping.reason if rec.mapping else '?'}"
        self.log.info("TLS handshake from {peer} refused: certificate {subject} (sha256 {fp}): {why}",
                      peer=peer, subject=safe_text(v.subject or "?"), fp=v.fingerprint, why=safe_text(why))
