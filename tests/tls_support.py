"""Helpers for the TLS listener tests: a PKI on disk, a config, in-memory handshakes.

Handshakes run with ``twisted.test.iosim`` and ONE ``Clock`` shared by both
``TLSMemoryBIOFactory`` objects and the pump, so nothing touches the global reactor.
The client side is a small pyOpenSSL creator that can present any certificate, any
chain and any key (including broken ones).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.internet.address import IPv4Address
from twisted.test.iosim import FakeTransport, connectedServerAndClient
from zope.interface import implementer

from proxy.listener.identity import ConnectionIdentity
from proxy.listener.tls import identify
from trust import issue as I


SERVER_ADDR = IPv4Address("TCP", "127.0.0.1", 8443)
CLIENT_ADDR = IPv4Address("TCP", "127.0.0.2", 50123)


@dataclass
class TlsPki:
    """A CA (in the store), a server certificate, and helpers to make client certificates."""

    folder: Path
    key_type: str = "ec256"
    ca: I.Issued = field(init=False)
    server: I.Issued = field(init=False)
    store: Path = field(init=False)
    server_cert: Path = field(init=False)
    server_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = I.ca("tls test CA", key_type=self.key_type)  # type: ignore[arg-type]
        self.server = I.server(self.ca, ("localhost", "127.0.0.1"), key_type=self.key_type)  # type: ignore[arg-type]
        self.server_cert, self.server_key = self.server.write(self.folder, "server")
        self.store = self.folder / "trust.d"
        self.store.mkdir(exist_ok=True)
        (self.store / "ca.pem").write_bytes(self.ca.cert_pem())

    def client(self, cn: Any = "alice", issuer: I.Issued | None = None, **kw: Any) -> I.Issued:
        return I.client(issuer or self.ca, cn, **kw)

    def expired(self, cn: str = "old") -> I.Issued:
        now = I.utcnow()
        return self.client(cn, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))


def make_config(pki: TlsPki, *, client_auth: str = "need", min_version: str = "1.2",
                sni: Sequence[str] = (), trust: str = "", listen: str = "") -> Any:
    """A real :class:`proxy.config.Config` for ``pki`` (parsed from an INI text)."""
    from proxy.config import parse_config

    text = (f"[listen]\ncertificate = {pki.server_cert}\nkey = {pki.server_key}\n"
            f"client_auth = {client_auth}\ntls_min_version = {min_version}\n"
            + (f"sni_certificates = {', '.join(sni)}\n" if sni else "") + listen
            + f"\n[trust]\nstore = {pki.store}\n{trust}\n[upstream]\nurl = http://127.0.0.1:9\n")
    path = pki.folder / "certgate.conf"
    path.write_text(text)
    return parse_config(text, path)


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
    def presenting(cls, pki: TlsPki, issued: I.Issued | None, **kw: Any) -> "ClientTLS":
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

    identity: ConnectionIdentity | None = None
    handshake_done = False
    lost_reason: Any = None

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        self.identity = identify(self.transport, self.factory.clock.seconds())
        if self.identity is None:
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"echo:" + data)

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
    def identity(self) -> ConnectionIdentity | None:
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


class EchoUpstream:
    """A loopback HTTP/1.1 upstream answering 200 with the account header it received."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.count = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                outer.count += 1
                body = f"user={self.headers.get('X-Remote-User', '-')}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.daemon_threads = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
