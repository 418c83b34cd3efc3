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

Per-connection state lives in :data:`RECORDS`, keyed weakly by the ``SSL.Connection``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.logger import Logger

from trust.escape import safe_text

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


def x509_error_for(verdict: Any) -> int:
    """The OpenSSL verify error that best names why ``verdict`` (or the mapping) refuses."""
    for reason in getattr(verdict, "reasons", ()):
        code = X509_ERRORS.get(reason.code)
        if code is not None:
            return code
    return X509_V_ERR_CERT_REJECTED


@dataclass(slots=True, eq=False)
class HandshakeRecord:
    """What the verify callback learnt about one connection's handshake."""

    verifier: "HandshakeVerifier"
    chain: dict[int, bytes] = field(default_factory=dict)  # depth -> DER (depth >= 1)
    leaf_der: bytes | None = None
    verdict: Any = None  # trust.verify.Verdict
    mapping: Any = None  # trust.mapping.MappingResult (only when the verdict is ok)
    pending: bool = False  # mapping = ldap and not cached: identify() asks the directory
    decision: bool | None = None
    calls: int = 0
    ocsp_plan: Any = None  # trust.ocsp.OcspPlan of a pending OCSP fetch
    ocsp_wait: Any = None  # Deferred[trust.ocsp.OcspResult] of that fetch

    def chain_ders(self) -> tuple[bytes, ...]:
        """The certificates above the leaf, nearest first, as OpenSSL walked them."""
        return tuple(self.chain[d] for d in sorted(self.chain))


#: SSL.Connection -> its record; entries vanish with the connection.
RECORDS: "weakref.WeakKeyDictionary[SSL.Connection, HandshakeRecord]" = weakref.WeakKeyDictionary()


class HandshakeVerifier:
    """The verify callback of one trust generation (shared by its default and SNI contexts).

    ``refusal_sink(client_ip, reason)``, when set (by the service), hears of every refusal.

    ``verdicts`` is a ``VerdictCache``-like object with ``get_or_verify``; ``mapper(cert)``
    returns a ``MappingResult``; ``clock`` gives epoch seconds via ``seconds()``.
    """

    refusal_sink: "Callable[[str, str], None] | None" = None

    def __init__(self, *, generation: Any, policy: Any, verdicts: Any, mapper: Callable[[x509.Certificate], Any],
                 client_auth: str, clock: Any, log: Logger | None = None, ocsp: Any = None,
                 directory: Any = None) -> None:
        self.generation = generation
        #: a proxy.listener.ocsp.OcspChecker when OCSP is enabled for some CA, else None
        self.ocsp = ocsp if ocsp is not None and ocsp.settings.enabled else None
        #: proxy.listener.directory.DirectoryMapper when mapping = ldap: the account comes from there
        self.directory = directory
        self.policy = policy
        self.verdicts = verdicts
        self.mapper = mapper
        self.client_auth = client_auth
        self.clock = clock
        self.log = log or _log
        self._mapping_memo: dict[str, Any] = {}
        self._plan_memo: dict[tuple[str, ...], Any] = {}  # chain fingerprints -> trust.ocsp.OcspPlan | None
        self.refused = 0  # handshakes refused in need mode (for tests/metrics)
        #: set just before the callback refuses; read by the context's alert shim
        self.refusal_error: int | None = None

    # -- per connection
    def register(self, conn: SSL.Connection) -> HandshakeRecord:
        """Start the record of a new connection made from one of this verifier's contexts."""
        rec = HandshakeRecord(self)
        RECORDS[conn] = rec
        return rec

    def verdict_for(self, leaf_der: bytes, chain_ders: tuple[bytes, ...], now: float) -> Any:
        """The (cached) trust verdict for this leaf and chain under this generation."""
        return self.verdicts.get_or_verify(leaf_der, chain_ders, self.generation, self.policy, now)

    def mapping_for(self, verdict: Any, leaf_der: bytes) -> Any:
        """The account mapping of an accepted certificate (memoised by fingerprint)."""
        hit = self._mapping_memo.get(verdict.fingerprint)
        if hit is not None:
            return hit
        result = self.mapper(x509.load_der_x509_certificate(leaf_der))
        if len(self._mapping_memo) >= _MAPPING_MEMO_MAX:
            self._mapping_memo.clear()
        self._mapping_memo[verdict.fingerprint] = result
        return result

    def decide(self, rec: HandshakeRecord, leaf_der: bytes, now: float) -> bool:
        """Compute and record the verdict (and mapping) for ``rec``; the need-mode answer.

        With OCSP, a cached answer is folded into the verdict; otherwise a fetch is started
        and recorded in ``rec.ocsp_wait`` (the answer is provisionally yes: see
        :func:`proxy.listener.tls.identify`).
        """
        chain = rec.chain_ders()
        verdict = self.verdict_for(leaf_der, chain, now)
        rec.ocsp_plan = rec.ocsp_wait = None
        rec.pending = False
        if verdict.ok and self.directory is not None:
            mapping = self.directory.peek(verdict.fingerprint)
            if mapping is None:
                # the account comes after the handshake (identify() asks the directory); OCSP
                # is asked meanwhile, as for any certificate that may be accepted
                if self.ocsp is not None:
                    verdict = self._with_ocsp(rec, verdict, now)
                rec.leaf_der, rec.verdict, rec.mapping = leaf_der, verdict, None
                rec.pending = bool(verdict.ok)
                return bool(verdict.ok)
        else:
            mapping = self.mapping_for(verdict, leaf_der) if verdict.ok else None
        if mapping is not None and mapping.account is not None and self.ocsp is not None:
            # Only certificates that would otherwise be accepted are worth asking about.
            verdict = self._with_ocsp(rec, verdict, now)
        rec.leaf_der, rec.verdict = leaf_der, verdict
        rec.mapping = mapping if verdict.ok else None
        return bool(verdict.ok and rec.mapping is not None and rec.mapping.account is not None)

    def _with_ocsp(self, rec: HandshakeRecord, verdict: Any, now: float) -> Any:
        from trust import ocsp as O

        key = verdict.chain_fingerprints
        plan = self._plan_memo.get(key, False)
        if plan is False:
            plan = O.plan_for(verdict, self.generation, self.ocsp.settings)
            if len(self._plan_memo) >= _MAPPING_MEMO_MAX:
                self._plan_memo.clear()
            self._plan_memo[key] = plan
        if plan is None:
            return verdict
        result = self.ocsp.cached(plan, now)
        if result is None:
            rec.ocsp_plan, rec.ocsp_wait = plan, self.ocsp.fetch(plan)
            return verdict
        return O.apply(verdict, *O.decide(plan.mode, result))

    # -- the OpenSSL callback
    def __call__(self, conn: SSL.Connection, cert: Any, errno: int, depth: int, preverify_ok: int) -> bool:
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
                self.refusal_error = x509_error_for(rec.verdict)
                return False
            return True
        if not preverify_ok:
            # An OpenSSL complaint about the leaf before it walked the whole chain (e.g.
            # its purpose check): ignored; trust decides at the final depth-0 call.
            return True
        try:
            ok = self.decide(rec, crypto.dump_certificate(_ASN1, cert), self.clock.seconds())
        except Exception:  # a bug must not let a certificate through: refuse, in every mode
            self.log.failure("certificate verification failed unexpectedly; refusing the handshake")
            rec.decision = False
            self.refusal_error = X509_V_ERR_CERT_REJECTED
            return False
        rec.decision = ok
        if ok or self.client_auth == "want":
            return True
        self.refused += 1
        self.refusal_error = x509_error_for(rec.verdict)
        self._log_refusal(conn, rec)
        return False

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
        sink = HandshakeVerifier.refusal_sink
        if sink is not None:
            codes = v.codes if not v.ok else ()
            sink(host, (codes[0] if codes else "untrusted") if not v.ok else "unmapped")
        why = v.summary if not v.ok else f"maps to no account: {rec.mapping.reason if rec.mapping else '?'}"
        self.log.info("TLS handshake from {peer} refused: certificate {subject} (sha256 {fp}): {why}",
                      peer=peer, subject=safe_text(v.subject or "?"), fp=v.fingerprint, why=safe_text(why))
