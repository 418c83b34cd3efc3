"""The TLS listener: a live connection creator, the per-connection identity, revalidation.

* :class:`LiveServerTLS` hands every *new* connection the current context of a
  :class:`proxy.listener.reload.TrustState` (after a cheap check for store/certificate edits);
  existing connections keep the context they were made with.
* :func:`identify` is called once by the HTTP layer at ``handshakeCompleted``; it turns
  the handshake into one frozen :class:`~proxy.listener.identity.ConnectionIdentity`. Nothing
  after that looks at OpenSSL objects again.
* :func:`revalidate` aborts live connections whose certificate no longer verifies after a
  trust reload (CA removed, CRL revocation, expiry).

Client certificates are judged only by :mod:`trust` (see :mod:`proxy.listener.verify`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterable

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from proxy.listener.context import (TLSConfigError, ServerIdentity, build_context,  # noqa: F401 (re-exports)
                                load_server_identity)
from proxy.listener.verify import RECORDS, HandshakeRecord, HandshakeVerifier

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred
from proxy.listener.identity import ConnectionIdentity, anonymous
from trust.escape import safe_text

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

    def __init__(self, trust_state: Any, config: Any = None) -> None:
        self.trust_state = trust_state
        self.config = config
        self.connections_made = 0

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return self.socket_connection(None)

    def socket_connection(self, sock: Any) -> SSL.Connection:
        """A new server ``SSL.Connection`` on ``sock`` (None: memory BIOs) with the current context,
        registered with that generation's verifier (proxy.listener.transport calls this per accept)."""
        self.trust_state.quick_check()
        snap = self.trust_state.current
        conn = SSL.Connection(snap.context, sock)
        snap.verifier.register(conn)
        self.connections_made += 1
        return conn


def _session_reused(conn: SSL.Connection) -> bool:
    """SSL_session_reused (pyOpenSSL has no public accessor). Unknown counts as reused."""
    try:
        from OpenSSL._util import lib

        return bool(lib.SSL_session_reused(conn._ssl))  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - fail closed: a resumed handshake proves nothing
        return True


def handshake_record(transport: Any) -> HandshakeRecord | None:
    """The verify callback's record for a TLS transport, if it was made by LiveServerTLS."""
    try:
        conn = transport.getHandle()
    except Exception:
        return None
    return RECORDS.get(conn) if isinstance(conn, SSL.Connection) else None


def identify(transport: Any, now: float) -> "ConnectionIdentity | None | Deferred[ConnectionIdentity | None]":
    """See :func:`_identify`; afterwards the handshake record is dropped (an idle
    connection keeps only its frozen identity)."""
    try:
        return _identify(transport, now)
    finally:
        conn = transport.getHandle() if hasattr(transport, "getHandle") else None
        if isinstance(conn, SSL.Connection):
            RECORDS.pop(conn, None)


def _identify(transport: Any, now: float) -> "ConnectionIdentity | None | Deferred[ConnectionIdentity | None]":
    """The frozen identity of a connection whose TLS handshake just completed.

    ``transport`` is a ``proxy.listener.transport.TLSServer`` or a ``TLSMemoryBIOProtocol``
    (``getHandle()`` gives the ``SSL.Connection`` of either); ``now`` is the handshake time from the caller's clock. Returns
    None when the connection must be aborted: ``need`` mode without an accepted,
    mapped certificate (normally refused inside the handshake already), a resumed
    handshake in ``need`` mode, or a connection not made by :class:`LiveServerTLS`.
    With ``mapping = ldap`` and no cached answer, returns a Deferred firing with the same
    (identity or None) once the directory answered or its timeout passed.
    Reads the verdict recorded in the handshake; computes it only if the callback did not
    (never for a certificate OpenSSL did not receive).

    When an OCSP answer is still being fetched, returns a Deferred that fires with the
    identity (or None) once the answer is in or its deadline (``ocsp_timeout``) passed; the
    caller must hold the connection (read nothing, forward nothing) until then.
    """
    rec = handshake_record(transport)
    if rec is None:
        _log.error("identify(): connection not created by LiveServerTLS; refusing it")
        return None
    conn: SSL.Connection = transport.getHandle()
    verifier = rec.verifier
    mode = verifier.client_auth
    peer = transport.getPeer()
    ip, port = getattr(peer, "host", ""), int(getattr(peer, "port", 0) or 0)
    protocol = conn.get_protocol_version_name() or ""
    cipher = conn.get_cipher_name() or ""
    full = not _session_reused(conn)
    raw_sni = conn.get_servername()
    sni = raw_sni.decode("ascii", "replace") if raw_sni else None
    # A resumed handshake carries the old session's certificate without a new proof of
    # possession: it never counts as presented (resumption is off; this is the safety net).
    leaf = conn.get_peer_certificate(as_cryptography=True) if mode != "none" and full else None
    if leaf is None:
        if mode == "need":
            return None
        return replace(anonymous(ip, port, now, protocol, cipher, full), server_name=sni)
    leaf_der = leaf.public_bytes(Encoding.DER)
    if rec.verdict is None or rec.leaf_der != leaf_der:
        # The callback did not decide for this leaf (e.g. a resumed session): decide now.
        if rec.leaf_der != leaf_der:
            rec.chain = _peer_chain(conn, leaf_der)
        verifier.decide(rec, leaf_der, now)
    chain_der = rec.chain_ders()
    facts = dict(handshake_at=now, full_handshake=full, protocol=protocol, cipher=cipher, client_ip=ip,
                 client_port=port, server_name=sni, leaf=leaf, leaf_der=leaf_der, chain_der=chain_der)
    if rec.pending and rec.verdict.ok and verifier.directory is not None:
        # mapping = ldap, not cached: the connection's identity waits for the directory
        # (bounded by its timeout), and for a pending OCSP answer too; the HTTP layer parses
        # nothing meanwhile.
        verdict, plan, wait = rec.verdict, rec.ocsp_plan, rec.ocsp_wait
        d = verifier.directory.resolve(leaf, leaf_der, verdict.fingerprint)
        if wait is None:
            return d.addCallback(lambda mapping: _identity(verdict, mapping, mode, facts))
        from twisted.internet.defer import gatherResults

        both = gatherResults([d, wait], consumeErrors=True)
        return both.addCallback(lambda r: _after_ocsp(verdict, r[0], plan, r[1], mode, facts))
    if rec.ocsp_wait is not None:
        # No cached OCSP answer: the connection's identity waits for the responder (bounded by
        # ocsp_timeout); the HTTP layer parses nothing meanwhile.
        verdict, mapping, plan = rec.verdict, rec.mapping, rec.ocsp_plan
        return rec.ocsp_wait.addCallback(lambda result: _after_ocsp(verdict, mapping, plan, result, mode, facts))
    return _identity(rec.verdict, rec.mapping, mode, facts)


def _identity(verdict: Any, mapping: Any, mode: str, facts: dict[str, Any]) -> ConnectionIdentity | None:
    """The identity of a presented certificate with its verdict and mapping (None: abort)."""
    account = mapping.account if (verdict.ok and mapping is not None) else None
    mapping_error = None
    if verdict.ok and account is None:
        mapping_error = mapping.reason if mapping is not None else "the certificate maps to no account"
    if mode == "need" and account is None:
        if verdict.ok:
            _log.info("connection from {ip}:{port} closed: certificate {subject} (sha256 {fp}) maps to no "
                      "account: {why}", ip=facts["client_ip"], port=facts["client_port"], subject=verdict.subject,
                      fp=verdict.fingerprint, why=mapping_error)
        return None
    return ConnectionIdentity(presented=True, verdict=verdict, account=account, mapping_error=mapping_error,
                              **facts)


def _after_ocsp(verdict: Any, mapping: Any, plan: Any, result: Any, mode: str, facts: dict[str, Any]
                ) -> ConnectionIdentity | None:
    """The identity once the OCSP answer (or its failure) is in: the verdict with the answer applied."""
    from trust import ocsp as O
    from trust.certinfo import printable_repr

    v = O.apply(verdict, *O.decide(plan.mode, result))
    ident = _identity(v, mapping if v.ok else None, mode, facts)
    sink = HandshakeVerifier.refusal_sink
    if ident is None and sink is not None:  # a need-mode refusal, as if refused in the handshake
        sink(facts["client_ip"], v.codes[0] if v.codes else "unmapped")
    if ident is None or not v.ok:
        _log.info("connection from {ip}:{port} of {subject} (sha256 {fp}) {what} after the OCSP check: {why}",
                  ip=facts["client_ip"], port=facts["client_port"], subject=printable_repr(v.subject) or "?",
                  fp=v.fingerprint, what="closed" if ident is None else "refused", why=v.summary)
    return ident


def _peer_chain(conn: SSL.Connection, leaf_der: bytes) -> dict[int, bytes]:
    chain = conn.get_peer_cert_chain(as_cryptography=True) or []
    ders = [c.public_bytes(Encoding.DER) for c in chain]
    ders = [d for d in ders if d != leaf_der]
    return {i + 1: d for i, d in enumerate(ders)}


def _identity_of(connection: Any) -> ConnectionIdentity | None:
    ident = getattr(connection, "identity", None)
    if ident is None:
        ctx = getattr(connection, "conn", None)
        ident = getattr(ctx, "identity", None)
    return ident if isinstance(ident, ConnectionIdentity) else None


def revalidate(connections: Iterable[Any], trust_state: Any, now: float) -> int:
    """Abort live connections whose accepted certificate no longer verifies; return how many.

    Each item has ``identity`` (or ``conn.identity``) and ``abort()`` or
    ``transport.abortConnection()`` (the HTTP layer's ``GatewayProtocol``). Only
    connections that *presented an accepted certificate* are checked, under
    ``trust_state``'s current generation at ``now``; connections without one are left
    alone (they never had certificate rights to lose).
    """
    closed = 0
    for c in list(connections):
        ident = _identity_of(c)
        if ident is None or ident.leaf is None or ident.verdict is None or not ident.verdict.ok:
            continue
        leaf_der = ident.leaf.public_bytes(Encoding.DER)
        if trust_state.still_valid(leaf_der, ident.chain_der, now):
            continue
        v = trust_state.verify(leaf_der, ident.chain_der, now)
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
