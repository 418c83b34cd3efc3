"""Hardened TLS settings, in memory: versions, ciphers, no resumption, no renegotiation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.task import Clock
from zope.interface import implementer

from proxy.listener.context import CONTEXT_OPTIONS
from proxy.listener.reload import TrustState
from proxy.listener.tls import LiveServerTLS
from tests.tls_support import I, ClientTLS, TlsPki, connect, make_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return TlsPki(tmp_path_factory.mktemp("hardening"), key_type="rsa2048")


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(I.utcnow().timestamp())
    return c


def creator(pki: TlsPki, clock: Clock, mode: str = "want", **kw: Any) -> tuple[TrustState, LiveServerTLS]:
    cfg = make_config(pki, client_auth=mode, **kw)
    state = TrustState(cfg, clock)
    return state, LiveServerTLS(state, cfg)


def _error_text(reason: Any) -> str:
    return str(reason.value) if reason is not None else ""


def test_context_options(pki: TlsPki, clock: Clock) -> None:
    state, _ = creator(pki, clock)
    ctx = state.context
    conn = SSL.Connection(ctx, None)
    got = _lib.SSL_get_options(conn._ssl)  # type: ignore[attr-defined]
    for flag in (SSL.OP_NO_TICKET, SSL.OP_NO_RENEGOTIATION, SSL.OP_CIPHER_SERVER_PREFERENCE,
                 SSL.OP_NO_COMPRESSION):
        assert got & flag, hex(flag)
    assert got & CONTEXT_OPTIONS == CONTEXT_OPTIONS
    assert _lib.SSL_CTX_get_session_cache_mode(ctx._context) == SSL.SESS_CACHE_OFF  # type: ignore[attr-defined]
    suites = conn.get_cipher_list()
    tls12 = [s for s in suites if not s.startswith("TLS_")]
    assert tls12 and all(s.startswith("ECDHE-") and ("GCM" in s or "CHACHA20" in s) for s in tls12), tls12


def test_tls11_is_refused(pki: TlsPki, clock: Clock) -> None:
    _, cr = creator(pki, clock)
    cl = ClientTLS.presenting(pki, pki.client("alice"), max_version=SSL.TLS1_1_VERSION)
    cl.context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    c = connect(cr, cl, clock)
    assert not c.server.handshake_done and not c.client.handshake_done
    assert "protocol version" in _error_text(c.client.lost_reason)


def test_min_version_13_refuses_tls12(pki: TlsPki, clock: Clock) -> None:
    _, cr = creator(pki, clock, min_version="1.3")
    c = connect(cr, ClientTLS.presenting(pki, pki.client("alice"), max_version=SSL.TLS1_2_VERSION), clock)
    assert not c.server.handshake_done and "protocol version" in _error_text(c.client.lost_reason)
    ok = connect(cr, ClientTLS.presenting(pki, pki.client("alice")), clock)
    assert ok.established and ok.identity.protocol == "TLSv1.3"


def test_cbc_only_client_is_refused(pki: TlsPki, clock: Clock) -> None:
    _, cr = creator(pki, clock)
    cl = ClientTLS.presenting(pki, pki.client("alice"), max_version=SSL.TLS1_2_VERSION)
    cl.context.set_cipher_list(b"ECDHE-RSA-AES128-SHA:AES128-SHA")
    c = connect(cr, cl, clock)
    assert not c.server.handshake_done


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_offered_session_is_never_resumed(pki: TlsPki, clock: Clock, version: int) -> None:
    """CERT-14: a client offering its saved session gets a full handshake that re-proves the key."""
    _, cr = creator(pki, clock)
    cl = ClientTLS.presenting(pki, pki.client("alice"), max_version=version)
    cl.context.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
    first = connect(cr, cl, clock)
    first.roundtrip()  # TLS 1.3 tickets, if any, arrive after the handshake
    saved = cl.connections[-1].get_session()
    assert saved is not None
    make = cl.clientConnectionForTLS

    def offering(proto: Any) -> SSL.Connection:
        conn = make(proto)
        conn.set_session(saved)
        return conn

    cl.clientConnectionForTLS = offering  # type: ignore[method-assign]
    again = connect(cr, cl, clock)
    assert again.established
    assert not _lib.SSL_session_reused(cl.connections[-1]._ssl)  # type: ignore[attr-defined]
    assert again.identity.full_handshake is True and again.identity.account == "alice"


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_resumption_probe_resumes_against_a_permissive_server(pki: TlsPki, clock: Clock, version: int) -> None:
    """Control for the test above: the same client *does* resume when a server allows it."""

    @implementer(IOpenSSLServerConnectionCreator)
    class Permissive:
        def __init__(self) -> None:
            ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
            ctx.use_certificate(pki.server.cert)
            ctx.use_privatekey(pki.server.key)
            ctx.set_session_id(b"permissive")
            ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
            self.ctx = ctx

        def serverConnectionForTLS(self, proto: Any) -> SSL.Connection:
            return SSL.Connection(self.ctx, None)

    server = Permissive()
    cl = ClientTLS.presenting(pki, None, max_version=version)
    cl.context.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
    from tests.tls_support import connect as raw_connect

    first = raw_connect(server, cl, clock)
    first.roundtrip()
    saved = cl.connections[-1].get_session()
    make = cl.clientConnectionForTLS

    def offering(proto: Any) -> SSL.Connection:
        conn = make(proto)
        conn.set_session(saved)
        return conn

    cl.clientConnectionForTLS = offering  # type: ignore[method-assign]
    raw_connect(server, cl, clock).roundtrip()
    assert _lib.SSL_session_reused(cl.connections[-1]._ssl)  # type: ignore[attr-defined]


def test_client_renegotiation_is_refused(pki: TlsPki, clock: Clock) -> None:
    """CERT-12: a TLS 1.2 client asking to renegotiate (to swap certificates) is refused."""
    _, cr = creator(pki, clock)
    cl = ClientTLS.presenting(pki, pki.client("alice"), max_version=SSL.TLS1_2_VERSION)
    c = connect(cr, cl, clock)
    assert c.established and c.identity.protocol == "TLSv1.2"
    identity = c.identity
    conn = cl.connections[-1]
    assert conn.renegotiate()
    with pytest.raises(SSL.WantReadError):
        conn.do_handshake()
    c.client_tls._flushSendBIO()  # put the renegotiation ClientHello on the wire
    c.pump.flush()
    c.roundtrip(b"after")
    c.pump.flush()
    assert "no renegotiation" in _error_text(c.client.lost_reason)
    assert c.server.identity is identity  # the identity was fixed once and never replaced


def test_none_mode_sends_no_certificate_request(pki: TlsPki, clock: Clock) -> None:
    _, cr = creator(pki, clock, mode="none")
    cl = ClientTLS.presenting(pki, pki.client("alice"))
    c = connect(cr, cl, clock)
    assert c.established and not c.identity.presented
    assert cl.connections[-1].get_client_ca_list() == []


def test_rsa_and_ecdsa_server_certificates(tmp_path: Path, clock: Clock) -> None:
    for kt in ("rsa2048", "ec256"):
        p = TlsPki(tmp_path / kt, key_type=kt)
        _, cr = creator(p, clock, mode="need")
        c = connect(cr, ClientTLS.presenting(p, p.client("alice"), max_version=SSL.TLS1_2_VERSION), clock)
        assert c.established
        assert ("ECDHE-RSA-" if kt.startswith("rsa") else "ECDHE-ECDSA-") in c.identity.cipher


def test_server_chain_is_sent(tmp_path: Path, clock: Clock) -> None:
    p = TlsPki(tmp_path)
    inter = I.ca("server intermediate", issuer=p.ca)
    srv = I.server(inter, ("localhost",))
    srv.write(p.folder, "server")  # server.pem now holds leaf + intermediate
    _, cr = creator(p, clock, mode="need")
    cl = ClientTLS.presenting(p, p.client("alice"))
    c = connect(cr, cl, clock)
    assert c.established  # the client trusts only the root: the intermediate had to be sent
    chain = cl.connections[-1].get_peer_cert_chain(as_cryptography=True)
    assert [x.subject for x in chain][:2] == [srv.cert.subject, inter.cert.subject]
