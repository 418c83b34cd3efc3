"""GatewayProtocol under TLSMemoryBIOFactory, in memory (iosim + one shared Clock)."""

from __future__ import annotations

from typing import Any

from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import FakeTransport, connectedServerAndClient
from zope.interface import implementer

from proxy.http.factory import GatewayFactory
from proxy.listener.identity import ConnectionIdentity
from proxy.http.messages import text_response
from proxy.http.tunnel import TunnelRegistry
from proxy.http.upstream import UpstreamPools
from tests.harness.config import engine_config
from trust import issue as I

CA = I.ca("http tls test CA")
SERVER = I.server(CA, ("localhost",))
ALICE = I.client(CA, "alice")


@implementer(IOpenSSLClientConnectionCreator)
class ClientCreator:
    def __init__(self, issued: I.Issued | None) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if issued is not None:
            ctx.use_certificate(issued.cert)
            ctx.use_privatekey(issued.key)
        ctx.get_cert_store().add_cert(crypto.X509.from_cryptography(CA.cert))  # type: ignore[union-attr]
        ctx.set_verify(SSL.VERIFY_PEER)
        self.ctx = ctx

    def clientConnectionForTLS(self, tls: Any) -> SSL.Connection:
        c = SSL.Connection(self.ctx, None)
        c.set_tlsext_host_name(b"localhost")
        return c


CLIENTS: list["Client"] = []


class Client(Protocol):
    def __init__(self) -> None:
        CLIENTS.append(self)
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class Gate:
    def __init__(self) -> None:
        self.heads: list[Any] = []

    def decide(self, head: Any, conn: Any) -> Any:
        self.heads.append(head)
        return text_response(200, f"hello {conn.identity.account}")


def _stack(identify_result: str = "cn", client_cert: I.Issued | None = ALICE, send_tls: bool = True,
           listen: dict[str, Any] | None = None, gw: Any = None, clock: Any = None) -> Any:
    clock = clock or Clock()
    calls: list[tuple[Any, float]] = []

    def identify(transport: Any, now: float) -> Any:
        calls.append((transport, now))
        if identify_result == "none":
            return None
        leaf = transport.getHandle().get_peer_certificate(as_cryptography=True)
        cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return ConnectionIdentity(presented=True, verdict=None, account=cn, mapping_error=None, handshake_at=now,
                                  full_handshake=True, protocol="", cipher="", client_ip="127.0.0.2",
                                  client_port=1)

    config = engine_config("http://127.0.0.1:9", {"listen": {"handshake_timeout": 5.0, **(listen or {})}})
    gate = Gate()
    if gw is None:
        gw = GatewayFactory(gate=gate, identify=identify, config=config,
                            pools=UpstreamPools(config.routes, clock, clock), clock=clock, tunnels=TunnelRegistry())
    gate = gw.gate
    opts = CertificateOptions(privateKey=SERVER.key, certificate=SERVER.cert, verify=True,
                              caCerts=[crypto.X509.from_cryptography(CA.cert)], requireCertificate=False)
    server_factory = TLSMemoryBIOFactory(opts, False, gw, clock=clock)
    client_factory: Any
    if send_tls:
        client_factory = TLSMemoryBIOFactory(ClientCreator(client_cert), True, Factory.forProtocol(Client), clock=clock)
    else:
        client_factory = Factory.forProtocol(Client)
    addr_s, addr_c = IPv4Address("TCP", "127.0.0.1", 8443), IPv4Address("TCP", "127.0.0.2", 1)
    c, s, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None), lambda: client_factory.buildProtocol(None), clock=clock,
        serverTransportFactory=lambda p: FakeTransport(p, True, hostAddress=addr_s, peerAddress=addr_c),
        clientTransportFactory=lambda p: FakeTransport(p, False, hostAddress=addr_c, peerAddress=addr_s))
    return clock, gw, gate, calls, c, s, pump


def test_request_over_tls_identified_once() -> None:
    clock, gw, gate, calls, c, s, pump = _stack()
    pump.flush()
    c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    pump.flush()
    client = c.wrappedProtocol
    assert client.received.endswith(b"hello alice")
    c.write(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    pump.flush()
    assert client.received.count(b"hello alice") == 2
    assert len(calls) == 1 and calls[0][0] is s  # the TLSMemoryBIOProtocol, once
    (proto,) = gw.connections
    assert proto.identity.account == "alice"


def test_handshake_deadline_aborts_silent_connection() -> None:
    """A client that never starts the handshake is cut at handshake_timeout; nothing parsed."""
    clock, gw, gate, calls, c, s, pump = _stack(send_tls=False)
    pump.flush()
    clock.advance(4.9)
    pump.flush()
    assert gw.connections and not c.lost
    clock.advance(0.2)
    pump.flush()
    assert not gw.connections and c.lost and gate.heads == [] and calls == []


def test_identify_none_aborts_before_http() -> None:
    """identify() returning None (need mode, refused certificate) aborts; the request is never decided."""
    clock, gw, gate, calls, c, s, pump = _stack(identify_result="none")
    client = CLIENTS[-1]
    if not client.lost:
        c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    pump.flush()
    assert len(calls) == 1 and gate.heads == [] and not gw.connections
    assert b"HTTP/1.1" not in client.received and client.lost


def test_max_connections_refused_before_tls_handshake() -> None:
    """One connection over [listen] max_connections is dropped before any handshake work."""
    clock, gw, gate, calls, c, s, pump = _stack(listen={"max_connections": 1})
    pump.flush()
    assert len(gw.connections) == 1
    _, _, _, calls2, c2, s2, pump2 = _stack(gw=gw, clock=clock)
    pump2.flush()
    client2 = CLIENTS[-1]
    assert client2.lost and gw.counters["refused"] == 1 and len(gw.connections) == 1
    c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # the first connection is unaffected
    pump.flush()
    assert CLIENTS[-2].received.endswith(b"hello alice")
