"""Handshake deadline and connection age at the TLS level: LiveServerTLS + the real HTTP layer.

iosim with one Clock drives the real ``TLSMemoryBIOFactory(LiveServerTLS, GatewayFactory)``
stack; a stub gate answers every request with 200 so only the connection rules are tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import FakeTransport, connectedServerAndClient
from zope.interface import implementer

from proxy.http.factory import GatewayFactory
from proxy.http.messages import Response
from proxy.listener.reload import TrustState
from proxy.listener.tls import LiveServerTLS, identify
from tests.harness.config import listener_config
from tests.harness.memtls import CLIENT_ADDR, ClientTLS, SERVER_ADDR
from tests.harness.pki import Pki
from trust import issue as I


class AnswerGate:
    """Answers every request 200 with the connection's account."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def decide(self, head: Any, conn: Any) -> Response:
        self.seen.append(conn.identity)
        return Response(200, [(b"content-type", b"text/plain")], f"user={conn.identity.account}".encode())


@implementer(IHandshakeListener)
class HttpClient(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = False
        self.handshake_done = False

    def handshakeCompleted(self) -> None:
        self.handshake_done = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class Silent(Protocol):
    """A TCP client that never starts TLS (or sends only part of a ClientHello)."""

    lost = False

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(I.utcnow().timestamp())
    return c


def stack(tmp_path: Path, clock: Clock, listen: str) -> tuple[TLSMemoryBIOFactory, GatewayFactory, Pki]:
    pki = Pki(tmp_path / "pki")
    cfg = listener_config(pki, listen=listen)
    state = TrustState(cfg, clock)
    http = GatewayFactory(gate=AnswerGate(), identify=identify, config=cfg, pools=None, clock=clock,
                          tunnels=None)
    return TLSMemoryBIOFactory(LiveServerTLS(state, cfg), False, http, clock=clock), http, pki


def pair(server_factory: Any, client_proto: Any, clock: Clock) -> Any:
    return connectedServerAndClient(
        lambda: server_factory.buildProtocol(None), lambda: client_proto, clock=clock,
        serverTransportFactory=lambda p: FakeTransport(p, isServer=True, hostAddress=SERVER_ADDR,
                                                       peerAddress=CLIENT_ADDR),
        clientTransportFactory=lambda p: FakeTransport(p, isServer=False, hostAddress=CLIENT_ADDR,
                                                       peerAddress=SERVER_ADDR))


def test_handshake_deadline_cuts_silent_and_slow_clients(tmp_path: Path, clock: Clock) -> None:
    server, http, _ = stack(tmp_path, clock, "handshake_timeout = 3\n")
    silent = Silent()
    _, s, pump = pair(server, silent, clock)
    assert len(http.connections) == 1
    clock.advance(2.9)
    pump.flush()
    assert not silent.lost
    clock.advance(0.2)
    pump.flush()
    assert silent.lost and not http.connections

    slow = Silent()
    c2, s2, pump2 = pair(server, slow, clock)
    s2.dataReceived(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03")  # a ClientHello that never ends
    clock.advance(3.1)
    pump2.flush()
    assert slow.lost


def test_completed_handshake_is_not_cut(tmp_path: Path, clock: Clock) -> None:
    server, http, pki = stack(tmp_path, clock, "handshake_timeout = 3\n")
    client = HttpClient()
    client_tls = TLSMemoryBIOFactory(ClientTLS.presenting(pki, pki.issue("alice")), True,
                                     Factory.forProtocol(Protocol), clock=clock)
    proto = client_tls.buildProtocol(None)
    proto.wrappedProtocol = client  # our recording protocol inside the client's TLS
    _, _, pump = pair(server, proto, clock)
    assert client.handshake_done
    clock.advance(10)
    pump.flush()
    assert not client.lost
    proto.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    pump.flush()
    assert client.received.startswith(b"HTTP/1.1 200") and client.received.endswith(b"user=alice")


def test_connection_age_closes_keep_alive(tmp_path: Path, clock: Clock) -> None:
    server, http, pki = stack(tmp_path, clock, "max_connection_age = 60\n[sessions]\npresence_interval = 100\n")
    client = HttpClient()
    client_tls = TLSMemoryBIOFactory(ClientTLS.presenting(pki, pki.issue("alice")), True,
                                     Factory.forProtocol(Protocol), clock=clock)
    proto = client_tls.buildProtocol(None)
    proto.wrappedProtocol = client  # our recording protocol inside the client's TLS
    _, _, pump = pair(server, proto, clock)
    proto.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    pump.flush()
    assert client.received.startswith(b"HTTP/1.1 200") and b"connection: close" not in client.received.lower()
    client.received = b""
    clock.advance(59)
    proto.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    pump.flush()
    assert b"connection: close" not in client.received.lower() and not client.lost
    client.received = b""
    clock.advance(1.5)  # idle at its maximum age: closed by certgate, not left in the client's pool
    pump.flush()
    assert client.lost and client.received == b""


def test_idle_tls_connection_closes_by_handshake_age(tmp_path: Path, clock: Clock) -> None:
    """Defaults (presence_interval 30 s from grace 300 s): an idle pooled connection ends 30 s after
    its handshake, although idle_timeout is 120 s, so no request travels on an old proof."""
    server, http, pki = stack(tmp_path, clock, "")
    client = HttpClient()
    client_tls = TLSMemoryBIOFactory(ClientTLS.presenting(pki, pki.issue("alice")), True,
                                     Factory.forProtocol(Protocol), clock=clock)
    proto = client_tls.buildProtocol(None)
    proto.wrappedProtocol = client
    _, _, pump = pair(server, proto, clock)
    clock.advance(20)
    proto.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    pump.flush()
    assert client.received.startswith(b"HTTP/1.1 200") and b"connection: close" not in client.received.lower()
    clock.advance(9.8)
    pump.flush()
    assert not client.lost
    clock.advance(0.3)
    pump.flush()
    assert client.lost
