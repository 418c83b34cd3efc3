"""OCSP in the TLS listener, in memory (iosim, one Clock): the identity waits for the answer.

The responder is a recording double whose answers are real signed OCSP responses; the real
HTTP path against `openssl ocsp` is in tests/blackbox/test_ocsp_gateway.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.x509 import ocsp
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from proxy.listener.ocsp import OcspChecker
from proxy.listener.reload import TrustState
from proxy.listener.tls import LiveServerTLS
from tests.ocsp_support import make_response
from tests.tls_support import I, ClientTLS, TlsPki, connect, make_config

URL = "http://ocsp.test/"


class Responder:
    """Hands out one pending Deferred per POST; the test answers them."""

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes]] = []

    def post(self, url: str, body: bytes, timeout: float) -> "Deferred[bytes]":
        d: Deferred[bytes] = Deferred()
        self.pending.append(d)
        return d


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return TlsPki(tmp_path_factory.mktemp("ocsppki"))


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(I.utcnow().timestamp())
    return c


def _listener(pki: TlsPki, clock: Clock, mode: str, ocsp_mode: str = "hard"
              ) -> tuple[LiveServerTLS, Responder, OcspChecker]:
    cfg = make_config(pki, client_auth=mode, trust=f"ocsp = {ocsp_mode}\nocsp_timeout = 2\nocsp_nonce = no\n")
    responder = Responder()
    checker = OcspChecker(cfg.trust.ocsp, clock, responder)
    return LiveServerTLS(TrustState(cfg, clock, ocsp=checker), cfg), responder, checker


def _answer(pki: TlsPki, leaf: I.Issued, clock: Clock, status: ocsp.OCSPCertStatus) -> bytes:
    now = dt.datetime.fromtimestamp(clock.seconds(), dt.timezone.utc)
    return make_response(leaf.cert, pki.ca.cert, pki.ca, status=status, this_update=now,
                         next_update=now + dt.timedelta(minutes=10))


def _fired(d: Any) -> Any:
    out: list[Any] = []
    d.addCallback(out.append)
    assert out, "the identity is still pending"
    return out[0]


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_need_mode_waits_then_accepts_good_and_closes_revoked(pki: TlsPki, clock: Clock, version: int) -> None:
    creator, responder, _ = _listener(pki, clock, "need")
    alice = pki.client("alice", ocsp_urls=(URL,))
    c = connect(creator, ClientTLS.presenting(pki, alice, max_version=version), clock)
    pending = c.server.identity
    assert isinstance(pending, Deferred) and not pending.called and len(responder.pending) == 1
    responder.pending[0].callback(_answer(pki, alice, clock, ocsp.OCSPCertStatus.GOOD))
    ident = _fired(pending)
    assert ident is not None and ident.ok and ident.account == "alice"

    mallory = pki.client("mallory", ocsp_urls=(URL,))
    c = connect(creator, ClientTLS.presenting(pki, mallory, max_version=version), clock)
    responder.pending[1].callback(_answer(pki, mallory, clock, ocsp.OCSPCertStatus.REVOKED))
    assert _fired(c.server.identity) is None

    # Cached now: the next handshake is refused inside TLS with the certificate_revoked alert.
    c = connect(creator, ClientTLS.presenting(pki, mallory, max_version=version), clock)
    assert c.server.identity is None and len(responder.pending) == 2
    assert "alert certificate revoked" in str(c.client.lost_reason.value)


def test_want_mode_keeps_the_connection_with_the_reason(pki: TlsPki, clock: Clock) -> None:
    creator, responder, _ = _listener(pki, clock, "want")
    mallory = pki.client("mallory", ocsp_urls=(URL,))
    c = connect(creator, ClientTLS.presenting(pki, mallory), clock)
    responder.pending[0].callback(_answer(pki, mallory, clock, ocsp.OCSPCertStatus.REVOKED))
    ident = _fired(c.server.identity)
    assert ident is not None and ident.presented and not ident.ok
    assert ident.verdict.codes == ("ocsp-revoked",) and "is revoked" in ident.invalid_reason


def test_deadline_fails_hard_and_warns_soft(pki: TlsPki, clock: Clock) -> None:
    for ocsp_mode in ("hard", "soft"):
        creator, responder, checker = _listener(pki, clock, "need", ocsp_mode)
        alice = pki.client("alice", ocsp_urls=(URL,))
        c = connect(creator, ClientTLS.presenting(pki, alice), clock)
        clock.advance(1.9)
        assert not c.server.identity.called
        clock.advance(0.2)
        ident = _fired(c.server.identity)
        if ocsp_mode == "hard":
            assert ident is None
        else:
            assert ident is not None and ident.ok and ident.verdict.warnings[-1].code == "ocsp-timeout"
        assert len(checker.cache) == 0


def test_ocsp_off_and_refused_chains_never_ask(pki: TlsPki, clock: Clock) -> None:
    creator, responder, _ = _listener(pki, clock, "want", "off")
    c = connect(creator, ClientTLS.presenting(pki, pki.client("alice", ocsp_urls=(URL,))), clock)
    assert c.identity is not None and c.identity.ok and not responder.pending
    creator, responder, _ = _listener(pki, clock, "want", "hard")
    c = connect(creator, ClientTLS.presenting(pki, I.client(I.ca("other"), "eve", ocsp_urls=(URL,))), clock)
    assert c.identity is not None and not c.identity.ok and not responder.pending
