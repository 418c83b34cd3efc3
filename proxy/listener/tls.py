"""The TLS listener: a live connection creator, the per-connection identity, revalidation.

* :class:`LiveServerTLS` hands every *new* connection the current context of a
  :class:`proxy.listener.reload.TrustState` (after a cheap check for store/certificate edits);
  existing connections keep the context they were made with.
* :func:`identify` is called once by the HTTP layer at ``handshakeCompleted``; it turns
  the handshake into one frozen :class:`~proxy.listener.identity.ConnectionIdentity` carrying
  the :class:`~trust.presented.PresentedCertificate` the verify callback made. Nothing after
  that looks at OpenSSL objects again, and nothing parses the certificate again.
* :func:`revalidate` aborts live connections whose certificate no longer verifies after a
  trust reload (CA removed, CRL revocation, expiry).

Client certificates are judged only by :mod:`trust` (see :mod:`proxy.listener.verify`).
"""

from __future__ import annotations

import socket
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterable, Protocol, cast

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IAddress, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from proxy.listener.context import (TLSConfigError, ServerIdentity, build_context,  # noqa: F401 (re-exports)
                                    load_server_identity)
from proxy.listener.identity import ConnectionIdentity, anonymous
from proxy.listener.verify import RECORDS, HandshakeRecord, HandshakeVerifier
from trust.escape import safe_text
from trust.mapping import MappingResult
from trust.presented import PresentedCertificate
from trust.verify import Verdict

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred

    from proxy.listener.reload import TrustState
    from trust.ocsp import OcspPlan, OcspResult

__all__ = ["LiveServerTLS", "identify", "revalidate", "load_server_identity", "TLSConfigError",
           "ServerIdentity", "build_context"]

_log = Logger(namespace="certgate.tls")


@implementer(IOpenSSLServerConnectionCreator)
class LiveServerTLS:
    """``IOpenSSLServerConnectionCreator`` giving each new connection the current context.

    Before each connection it calls ``trust_state.quick_check()`` (a few ``stat`` calls:
    the store folder, ``pinned/``, the certificate and key files), so an edit made with
    ``certgate trust`` (an atomic rename into the store folder) is used by the very next
    handshake. In-place edits of a store file are caught by the ``maybe_reload`` timer.
    """

    def __init__(self, trust_state: "TrustState", config: Any = None) -> None:
        self.trust_state = trust_state
        self.config = config
        self.connections_made = 0

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return self.socket_connection(None)

    def socket_connection(self, sock: socket.socket | None) -> SSL.Connection:
        """A new server ``SSL.Connection`` on ``sock`` (None: memory BIOs) with the current context,
        registered with that generation's verifier (proxy.listener.transport calls this per accept)."""
        self.trust_state.quick_check()
        snap = self.trust_state.current
        conn = SSL.Connection(snap.context, sock)
        snap.verifier.register(conn)
        self.connections_made += 1
        return conn


try:  # pyOpenSSL's cffi binding (SSL_session_reused has no public accessor)
    from OpenSSL._util import lib as _ossl
except ImportError:  # pragma: no cover - pyOpenSSL internals changed
    _ossl = None


def _session_reused(conn: SSL.Connection) -> bool:
    """SSL_session_reused. Unknown counts as reused (fail closed: a resumed handshake proves nothing)."""
    if _ossl is None:  # pragma: no cover
        return True
    try:
        return bool(_ossl.SSL_session_reused(conn._ssl))
    except Exception:  # pragma: no cover
        return True


class TLSTransport(Protocol):
    """What :func:`identify` needs of a TLS transport: ``proxy.listener.transport.TLSServer``
    or Twisted's ``TLSMemoryBIOProtocol`` (``getHandle()`` gives the ``SSL.Connection`` of either)."""

    def getHandle(self) -> object: ...

    def getPeer(self) -> IAddress: ...


def handshake_record(transport: TLSTransport) -> HandshakeRecord | None:
    """The verify callback's record for a TLS transport, if it was made by LiveServerTLS."""
    try:
        conn = transport.getHandle()
    except Exception:
        return None
    return RECORDS.get(conn) if isinstance(conn, SSL.Connection) else None


def identify(transport: TLSTransport, now: float) -> "ConnectionIdentity | None | Deferred[ConnectionIdentity | None]":
    """See :func:`_identify`; afterwards the handshake record is dropped (an idle
    connection keeps only its frozen identity)."""
    try:
        return _identify(transport, now)
    finally:
        conn = transport.getHandle() if hasattr(transport, "getHandle") else None
        if isinstance(conn, SSL.Connection):
            RECORDS.pop(conn, None)


def _same_x509(a: crypto.X509, b: crypto.X509) -> bool:
    """True when ``a`` and ``b`` are the same certificate.

    OpenSSL hands the verify callback and ``SSL_get_peer_certificate`` the very same X509
    object for a handshake's leaf, so comparing the pointers costs nothing; anything else is
    compared by its encoding.
    """
    pa, pb = getattr(a, "_x509", None), getattr(b, "_x509", None)
    if pa is not None and pa == pb:
        return True
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, a) == crypto.dump_certificate(crypto.FILETYPE_ASN1, b)


def _identify(transport: TLSTransport, now: float) -> "ConnectionIdentity | None | Deferred[ConnectionIdentity | None]":
    """The frozen identity of a connection whose TLS handshake just completed.

    ``transport`` is a ``proxy.listener.transport.TLSServer`` or a ``TLSMemoryBIOProtocol``
    (``getHandle()`` gives the ``SSL.Connection`` of either); ``now`` is the handshake time from
    the caller's clock. Returns
    None when the connection must be aborted: ``need`` mode without an accepted,
    mapped certificate (normally refused inside the handshake already), a resumed
    handshake in ``need`` mode, or a connection not made by :class:`LiveServerTLS`.
    With ``mapping = ldap`` and no cached answer, returns a Deferred firing with the same
    (identity or None) once the directory answered or its timeout passed.
    Reads the certificate and verdict recorded in the handshake; computes them only if the
    callback did not (never for a certificate OpenSSL did not receive).

    When an OCSP answer is still being fetched, returns a Deferred that fires with the
    identity (or None) once the answer is in or its deadline (``ocsp_timeout``) passed; the
    caller must hold the connection (read nothing, forward nothing) until then.
    """
    rec = handshake_record(transport)
    if rec is None:
        _log.error("identify(): connection not created by LiveServerTLS; refusing it")
        return None
    conn = transport.getHandle()
    assert isinstance(conn, SSL.Connection)
    verifier = rec.verifier
    mode = verifier.client_auth
    peer = transport.getPeer()
    ip, port = str(getattr(peer, "host", "")), int(getattr(peer, "port", 0) or 0)
    # names from OpenSSL's fixed tables: one string each, not one per connection
    protocol = sys.intern(conn.get_protocol_version_name() or "")
    cipher = sys.intern(conn.get_cipher_name() or "")
    full = not _session_reused(conn)
    raw_sni = conn.get_servername()
    sni = raw_sni.decode("ascii", "replace") if raw_sni else None
    # A resumed handshake carries the old session's certificate without a new proof of
    # possession: it never counts as presented (resumption is off; this is the safety net).
    leaf = conn.get_peer_certificate() if mode != "none" and full else None
    if leaf is None:
        if mode == "need":
            return None
        return replace(anonymous(ip, port, now, protocol, cipher, full), server_name=sni)
    cert = rec.presented
    if cert is None or rec.verdict is None or rec.leaf_x509 is None or not _same_x509(rec.leaf_x509, leaf):
        # The callback did not decide for this leaf (e.g. a resumed session): decide now.
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, leaf)
        cert = PresentedCertificate.shared(der, _peer_chain(conn, der))
        rec.chain, rec.leaf_x509 = dict(enumerate(cert.chain_der, 1)), leaf
        verifier.decide(rec, cert, now)
    verdict = rec.verdict
    assert verdict is not None
    # What the handshake says besides the verdict; _identity completes it.
    facts = ConnectionIdentity(presented=True, verdict=None, account=None, mapping_error=None, handshake_at=now,
                               full_handshake=full, protocol=protocol, cipher=cipher, client_ip=ip,
                               client_port=port, server_name=sni, certificate=cert)
    directory = verifier.directory
    if rec.pending and verdict.ok and directory is not None:
        # mapping = ldap, not cached: the connection's identity waits for the directory
        # (bounded by its timeout), and for a pending OCSP answer too; the HTTP layer parses
        # nothing meanwhile.
        plan, wait = rec.ocsp_plan, rec.ocsp_wait
        d = directory.resolve(cert)
        if wait is None or plan is None:
            return d.addCallback(lambda mapping: _identity(verdict, mapping, mode, facts))
        ocsp_plan = plan
        return _both(d, wait).addCallback(lambda r: _after_ocsp(verdict, r[0], ocsp_plan, r[1], mode, facts))
    if rec.ocsp_wait is not None and rec.ocsp_plan is not None:
        # No cached OCSP answer: the connection's identity waits for the responder (bounded by
        # ocsp_timeout); the HTTP layer parses nothing meanwhile.
        mapping, plan = rec.mapping, rec.ocsp_plan
        return rec.ocsp_wait.addCallback(lambda result: _after_ocsp(verdict, mapping, plan, result, mode, facts))
    return _identity(verdict, rec.mapping, mode, facts)


def _both(mapping: "Deferred[MappingResult]", ocsp: "Deferred[OcspResult]"
          ) -> "Deferred[tuple[MappingResult, OcspResult]]":
    """Both answers, once both are in (neither Deferred fails)."""
    from twisted.internet.defer import gatherResults

    pair: list[Deferred[object]] = [cast("Deferred[object]", mapping), cast("Deferred[object]", ocsp)]
    return gatherResults(pair, consumeErrors=True).addCallback(
        lambda r: (cast(MappingResult, r[0]), cast("OcspResult", r[1])))


def _identity(verdict: Verdict, mapping: MappingResult | None, mode: str, facts: ConnectionIdentity
              ) -> ConnectionIdentity | None:
    """``facts`` (the handshake's, without a verdict) completed with ``verdict`` and ``mapping`` (None: abort)."""
    account = mapping.account if (verdict.ok and mapping is not None) else None
    mapping_error = None
    if verdict.ok and account is None:
        mapping_error = mapping.reason if mapping is not None else "the certificate maps to no account"
    if mode == "need" and account is None:
        if verdict.ok:
            _log.info("connection from {ip}:{port} closed: certificate {subject} (sha256 {fp}) maps to no "
                      "account: {why}", ip=facts.client_ip, port=facts.client_port, subject=verdict.subject,
                      fp=verdict.fingerprint, why=mapping_error)
        return None
    return replace(facts, verdict=verdict, account=account, mapping_error=mapping_error)


def _after_ocsp(verdict: Verdict, mapping: MappingResult | None, plan: "OcspPlan", result: "OcspResult",
                mode: str, facts: ConnectionIdentity) -> ConnectionIdentity | None:
    """The identity once the OCSP answer (or its failure) is in: the verdict with the answer applied."""
    from trust import ocsp as O
    from trust.certinfo import printable_repr

    v = O.apply(verdict, *O.decide(plan.mode, result))
    ident = _identity(v, mapping if v.ok else None, mode, facts)
    sink = HandshakeVerifier.refusal_sink
    if ident is None and sink is not None:  # a need-mode refusal, as if refused in the handshake
        sink(facts.client_ip, v.codes[0] if v.codes else "unmapped")
    if ident is None or not v.ok:
        _log.info("connection from {ip}:{port} of {subject} (sha256 {fp}) {what} after the OCSP check: {why}",
                  ip=facts.client_ip, port=facts.client_port, subject=printable_repr(v.subject) or "?",
                  fp=v.fingerprint, what="closed" if ident is None else "refused", why=v.summary)
    return ident


def _peer_chain(conn: SSL.Connection, leaf_der: bytes) -> tuple[bytes, ...]:
    """The certificates the peer sent above ``leaf_der`` (DER, nearest first)."""
    chain = conn.get_peer_cert_chain() or []
    ders = [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in chain]
    return tuple(d for d in ders if d != leaf_der)


def _identity_of(connection: object) -> ConnectionIdentity | None:
    ident = getattr(connection, "identity", None)
    if ident is None:
        ctx = getattr(connection, "conn", None)
        ident = getattr(ctx, "identity", None)
    return ident if isinstance(ident, ConnectionIdentity) else None


def revalidate(connections: Iterable[object], trust_state: "TrustState", now: float) -> int:
    """Abort live connections whose accepted certificate no longer verifies; return how many.

    Each item has ``identity`` (or ``conn.identity``) and ``abort()`` or
    ``transport.abortConnection()`` (the HTTP layer's ``GatewayProtocol``). Only
    connections that *presented an accepted certificate* are checked, under
    ``trust_state``'s current generation at ``now``; connections without one are left
    alone (they never had certificate rights to lose). The connection's own
    :class:`~trust.presented.PresentedCertificate` is judged: nothing is parsed again
    unless the new generation has no verdict for it yet.
    """
    closed = 0
    for c in list(connections):
        ident = _identity_of(c)
        if ident is None or ident.certificate is None or ident.verdict is None or not ident.verdict.ok:
            continue
        if trust_state.still_accepted(ident.certificate, now):
            continue
        v = trust_state.verdict(ident.certificate, now)
        _log.info("closing connection from {ip}:{port} of {subject}: its certificate is no longer accepted "
                  "({why})", ip=ident.client_ip, port=ident.client_port, subject=safe_text(ident.subject),
                  why=v.summary if not v.ok else "it maps to no account")
        abort = getattr(c, "abort", None)
        transport = getattr(c, "transport", None)
        if callable(abort):
            abort()
        elif transport is not None:
            transport.abortConnection()
        else:
            continue
        closed += 1
    return closed
