"""In-memory TLS handshakes against the listener's real context, for unit tests.

:func:`connect` handshakes a :class:`ClientTLS` against a server connection creator; both ends
run with ``twisted.test.iosim`` and ONE ``Clock`` shared by both
``TLSMemoryBIOFactory`` objects and the pump, so nothing touches the global reactor.
The client side is a small pyOpenSSL creator that can present any certificate, any
chain and any key (including broken ones). The server protocol calls :func:`identify` at
handshake completion, as the HTTP layer does, and aborts when it returns None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.internet.address import IPv4Address
from twisted.test.iosim import FakeTransport, connectedServerAndClient
from zope.interface import implementer

from proxy.listener.identity import ConnectionIdentity
from proxy.listener.tls import identify
from tests.harness.pki import Pki
from trust import issue as I


SERVER_ADDR = IPv4Address("TCP", "127.0.0.1", 8443)
CLIENT_ADDR = IPv4Address("TCP", "127.0.0.2", 50123)


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """A client creator presenting ``cert`` (with ``chain`` and ``key``) and checking the server."""

    def __init__(self, server_ca: x509.Certificate | None, cert: x509.Certificate | None = None,
                 key: Any = None, chain: Sequence[x509.Certificate] = (), server_name: str | None = "localhost",
                 max_version: int | None = None, min_version: int | None = None) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if max_version is not None:
            ctx.set_max_proto_version(max_version)
        if min_version is not None:
            ctx.set_min_proto_version(min_version)
        if cert is not None:
            ctx.use_certificate(cert)
            for c in chain:
                ctx.add_extra_chain_cert(c)
        if key is not None:
            ctx.use_privatekey(key)
        if server_ca is not None:
            from OpenSSL import crypto

            ctx.get_cert_store().add_cert(crypto.X509.from_cryptography(server_ca))  # type: ignore[union-attr]
            ctx.set_verify(SSL.VERIFY_PEER)
        self.context = ctx
        self.server_name = server_name
        self.connections: list[SSL.Connection] = []

    @classmethod
    def presenting(cls, pki: Pki, issued: I.Issued | None, **kw: Any) -> "ClientTLS":
        """A client trusting ``pki``'s CA and presenting ``issued`` (with its chain) or nothing."""
        if issued is None:
            return cls(pki.ca.cert, **kw)
        kw.setdefault("chain", issued.chain)
        return cls(pki.ca.cert, issued.cert, issued.key, **kw)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.context, None)
        if self.server_name:
            conn.set_tlsext_host_name(self.server_name.encode())
        self.connections.append(conn)
        return conn


@implementer(IHandshakeListener)
class ServerProto(Protocol):
    """Calls :func:`identify` at handshake completion (as the HTTP layer does); echoes data."""

    identity: ConnectionIdentity | Deferred[ConnectionIdentity | None] | None = None  # Deferred: OCSP pending
    handshake_done = False
    lost_reason: Any = None

    @property
    def tls(self) -> Any:
        """The TLSMemoryBIOProtocol this protocol runs in (ITransport plus abortConnection)."""
        return self.transport

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        self.identity = identify(self.tls, self.factory.clock.seconds())
        if self.identity is None:
            self.tls.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.tls.write(b"echo:" + data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost_reason = reason


@implementer(IHandshakeListener)
class ClientProto(Protocol):
    handshake_done = False
    lost_reason: Any = None

    def __init__(self) -> None:
        self.received = b""

    def handshakeCompleted(self) -> None:
        self.handshake_done = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost_reason = reason


@dataclass
class Conn:
    client: ClientProto
    server: ServerProto
    pump: Any
    client_tls: Any  # TLSMemoryBIOProtocol
    server_tls: Any

    @property
    def identity(self) -> Any:
        """What :func:`identify` returned at the server's handshake (None before, or when it refused)."""
        return self.server.identity

    @property
    def established(self) -> bool:
        """Handshake done on both sides and the server did not abort."""
        return (self.client.handshake_done and self.server.handshake_done and self.server.identity is not None
                and self.client.lost_reason is None)

    def roundtrip(self, data: bytes = b"ping") -> bytes:
        before = len(self.client.received)
        self.client_tls.write(data)
        self.pump.flush()
        return self.client.received[before:]


def connect(server_creator: Any, client: ClientTLS, clock: Clock,
            tamper: Callable[[bytes], bytes] | None = None) -> Conn:
    """Handshake ``client`` against ``server_creator`` in memory; returns both ends.

    ``tamper`` rewrites every client-to-server chunk (to corrupt handshake messages).
    """
    sfac = Factory.forProtocol(ServerProto)
    sfac.clock = clock  # type: ignore[attr-defined]
    server_factory = TLSMemoryBIOFactory(server_creator, False, sfac, clock=clock)
    client_factory = TLSMemoryBIOFactory(client, True, Factory.forProtocol(ClientProto), clock=clock)
    made: dict[str, Any] = {}

    def build(name: str, factory: TLSMemoryBIOFactory) -> Any:
        proto = factory.buildProtocol(None)
        made[name] = proto.wrappedProtocol
        if name == "server" and tamper is not None:
            original = proto.dataReceived
            proto.dataReceived = lambda data: original(tamper(data))  # type: ignore[method-assign]
        return proto

    c, s, pump = connectedServerAndClient(
        lambda: build("server", server_factory), lambda: build("client", client_factory), clock=clock,
        serverTransportFactory=lambda p: FakeTransport(p, isServer=True, hostAddress=SERVER_ADDR,
                                                       peerAddress=CLIENT_ADDR),
        clientTransportFactory=lambda p: FakeTransport(p, isServer=False, hostAddress=CLIENT_ADDR,
                                                       peerAddress=SERVER_ADDR))
    pump.flush()
    return Conn(made["client"], made["server"], pump, c, s)
