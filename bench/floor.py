"""The benchmark's Python floor: the least a Twisted mTLS server does for the same job.

Usage: floor.py static|forward PORT PKI_DIR [UPSTREAM_PORT]

* ``static``  answers ``200 hello`` itself (no forwarding): the price of Twisted's TLS
  transport (``listenSSL``, memory BIOs) with one tiny HTTP exchange.
* ``forward`` forwards every request to ``127.0.0.1:UPSTREAM_PORT`` over a pool of
  persistent HTTP/1.1 connections, adding ``X-Remote-User`` (the client's CN, read once
  per connection). No certgate logic: no gate, no limits, no header policy, no timers.

TLS: the same wheel and the same settings as certgate (``proxy.listener.context``: TLS 1.2+,
AEAD suites, no tickets, session cache off, released buffers), client certificate required
and verified by OpenSSL itself against ``PKI_DIR/ca.pem``. Requests must be
``Content-Length``-framed (or bodiless) and not pipelined; anything else is a bench bug,
and the connection is dropped. Not a server for anything but the benchmark.
"""

from __future__ import annotations

import sys
from typing import Any

from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import reactor as _reactor, ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from zope.interface import implementer

reactor: Any = _reactor  # the epoll reactor: TCP, SSL and time

from proxy.listener.context import CONTEXT_OPTIONS, TLS12_CIPHERS, TLS13_SUITES

HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"


def context(pki: str) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(CONTEXT_OPTIONS)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(TLS12_CIPHERS)
    ctx.set_tls13_ciphersuites(TLS13_SUITES)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.use_certificate_chain_file(f"{pki}/server.pem")
    ctx.use_privatekey_file(f"{pki}/server.key")
    ctx.load_verify_locations(f"{pki}/ca.pem")
    ctx.load_client_ca(f"{pki}/ca.pem".encode())
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE)
    return ctx


def _content_length(head: bytes) -> int:
    i = head.lower().find(b"\r\ncontent-length:")
    if i < 0:
        return 0
    return int(head[i + 17:head.index(b"\r\n", i + 2)])


class Upstream(Protocol):
    """One pooled upstream connection: relays one response at a time to ``client``."""

    client: "Client | None" = None
    transport: Any  # a TCP transport

    def __init__(self) -> None:
        self.buf = b""
        self.need = -1

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.need = end + 4 + _content_length(self.buf[:end + 2])
        if len(self.buf) >= self.need:
            out, self.buf, self.need = self.buf, b"", -1
            client, self.client = self.client, None
            POOL.append(self)
            if client is not None:
                client.answered(out)

    def connectionLost(self, reason: object = None) -> None:
        if self in POOL:
            POOL.remove(self)
        if self.client is not None:
            self.client.transport.abortConnection()


POOL: list[Upstream] = []


@implementer(IHandshakeListener)
class Client(Protocol):
    transport: Any  # Twisted's TLS transport (getHandle: the SSL.Connection)
    forward = False
    upstream_port = 0

    def __init__(self) -> None:
        self.buf = b""
        self.user = b""
        self.close_after = False

    def handshakeCompleted(self) -> None:
        self.transport.setTcpNoDelay(True)
        cert = self.transport.getHandle().get_peer_certificate(as_cryptography=True)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if cert is not None else []
        self.user = str(cns[0].value).encode() if cns else b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end + 2]
        total = end + 4 + _content_length(head)
        if len(self.buf) < total:
            return
        req, self.buf = self.buf[:total], self.buf[total:]
        self.close_after = b"\r\nconnection: close" in head.lower()
        if not self.forward:
            self.answered(HELLO)
            return
        line_end = req.index(b"\r\n")
        rest = req[line_end:]
        if self.close_after:  # hop-by-hop: the pooled upstream connection stays open
            lines = rest[:end + 2 - line_end].split(b"\r\n")
            rest = b"\r\n".join(ln for ln in lines if not ln.lower().startswith(b"connection:")) + req[end + 2:]
        req = req[:line_end] + b"\r\nX-Remote-User: " + self.user + rest
        if POOL:
            up = POOL.pop()
            up.client = self
            up.transport.write(req)
        else:
            f = ClientFactory.forProtocol(Upstream)

            def send(p: Upstream) -> None:
                p.client = self
                p.transport.setTcpNoDelay(True)
                p.transport.write(req)

            from twisted.internet.endpoints import TCP4ClientEndpoint

            TCP4ClientEndpoint(reactor, "127.0.0.1", self.upstream_port).connect(f).addCallbacks(
                send, lambda _: self.transport.abortConnection())

    def answered(self, response: bytes) -> None:
        self.transport.write(response)
        if self.close_after:
            self.transport.loseConnection()


def main() -> None:
    mode, port, pki = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Client.forward = mode == "forward"
    if Client.forward:
        Client.upstream_port = int(sys.argv[4])
    factory = Factory.forProtocol(Client)
    factory.noisy = False
    ctx = context(pki)
    reactor.listenSSL(port, factory, _Ctx(ctx), backlog=4096, interface="127.0.0.1")
    reactor.run()


class _Ctx(ssl.ContextFactory):
    def __init__(self, ctx: SSL.Context) -> None:
        self.ctx = ctx

    def getContext(self) -> SSL.Context:
        return self.ctx


if __name__ == "__main__":
    main()
