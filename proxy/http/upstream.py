"""Upstream connections: one keep-alive pool per :class:`~proxy.config.Route`, response parsing.

A pool hands an :class:`UpstreamConnection` to a *requester* (the HTTP layer) through plain
method calls, so the common case (an idle pooled connection) allocates no Deferred:

- ``requester.upstream_ready(conn)`` — the connection is the requester's until it calls
  ``pool.release(conn, reusable)``;
- ``requester.upstream_failed(status)`` — 502 (refused, TLS failure) or 504 (connect timeout).

The connection parses responses with llhttp (``httptools.HttpResponseParser``) and calls the
requester's ``response_head`` / ``response_body`` / ``response_done`` / ``upstream_lost`` and,
after each read, ``flush``. ``https://`` routes are verified with service-identity against
``Route.tls.server_name`` (``optionsForClientTLS``); only ``unsafe_skip_verify`` turns that off.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol as TypingProtocol

import httptools
from twisted.internet import error as ierror
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from proxy.http.fastwrite import install as install_direct_write

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Route
    from proxy.clock import Clock
    from proxy.http.tunnel import WebSocketTunnel

log = Logger()

Headers = list[tuple[bytes, bytes]]

#: Framing of an upstream response body.
F_NONE, F_LENGTH, F_CHUNKED, F_CLOSE = 0, 1, 2, 3


class Requester(TypingProtocol):
    """What the pool and a connection call on the HTTP layer."""

    def upstream_ready(self, conn: "UpstreamConnection") -> None: ...
    def upstream_failed(self, status: int) -> None: ...
    def upstream_write_paused(self, paused: bool) -> None: ...
    def response_head(self, status: int, headers: Headers, framing: int, length: int) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_done(self) -> None: ...
    def response_upgrade(self, status: int, headers: Headers, rest: bytes) -> None: ...
    def upstream_lost(self, clean_eof: bool) -> None: ...
    def flush(self) -> None: ...


class UpstreamProtocolError(Exception):
    """The upstream sent something that is not a valid HTTP/1.1 response."""


@implementer(IPushProducer)
class UpstreamConnection(Protocol):
    """One connection to an upstream; at most one request in flight (no upstream pipelining).

    Registers itself as the streaming producer of its own transport so a full upstream write
    buffer pauses the client (``requester.upstream_write_paused``). ``head_request`` makes the
    next response body-less (a HEAD). ``tunnel`` set: bytes go straight to ``tunnel.from_upstream``.
    """

    def __init__(self, pool: "Pool") -> None:
        self.transport: Any = None  # TCP or TLS; Twisted's zope interfaces are not typed for mypy
        self.pool = pool
        self.requester: Requester | None = None
        self.tunnel: WebSocketTunnel | None = None
        self.connected = False
        self.reused = False
        self.head_request = False
        self.reusable = True
        self._parser = httptools.HttpResponseParser(self)
        self._headers: Headers = []
        self._in_head = True
        self._skip = False  # current message is a 1xx we do not relay
        self._done_head = False
        self._read_paused = False
        self._upgrade_rest: bytes | None = None

    # -- connection
    def connectionMade(self) -> None:
        self.connected = True
        t = self.transport
        try:
            t.setTcpNoDelay(True)
        except Exception:  # pragma: no cover - not a TCP transport (tests)
            pass
        if self.pool.fast_writes:
            install_direct_write(t.transport if hasattr(t, "wrappedProtocol") else t)
        t.registerProducer(self, True)
        self.pool._connected(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        was = self.connected
        self.connected = False
        self.pool._lost(self)
        if self.tunnel is not None:
            t, self.tunnel = self.tunnel, None
            t.lost()
            t.client.loseConnection()
            return
        req = self.requester
        if req is not None and was:
            self.requester = None
            req.upstream_lost(reason.check(ierror.ConnectionDone) is not None)

    # -- producer (our transport's write buffer)
    def pauseProducing(self) -> None:
        if self.requester is not None:  # also set while tunnelling
            self.requester.upstream_write_paused(True)

    def resumeProducing(self) -> None:
        if self.requester is not None:
            self.requester.upstream_write_paused(False)

    def stopProducing(self) -> None:
        pass

    # -- reading control (client backpressure)
    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resumeProducing()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def write_sequence(self, parts: "tuple[bytes, ...] | list[bytes]") -> None:
        self.transport.writeSequence(parts)

    def loseConnection(self) -> None:
        """Close after pending writes (a TLS transport needs the producer unregistered first)."""
        self.reusable = False
        t = self.transport
        if t is not None and self.connected:
            t.unregisterProducer()
            t.loseConnection()

    def abortConnection(self) -> None:
        self.abort()

    def abort(self) -> None:
        """Drop the connection now; it is never reused."""
        self.reusable = False
        self.requester = None
        if self.transport is not None:
            self.transport.abortConnection()

    # -- data
    def dataReceived(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_upstream(data)
            return
        req = self.requester
        if req is None:  # bytes on an idle connection: protocol violation
            self.loseConnection()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade(data[e.args[0]:])
            return
        except httptools.HttpParserError as e:
            self._protocol_error(f"invalid response: {e}")
            return
        if self.requester is not None:
            self.requester.flush()

    def _protocol_error(self, why: str) -> None:
        req = self.requester
        log.warn("upstream {route}: {why}", route=self.pool.route.name, why=why)
        self.abort()
        if req is not None:
            req.upstream_lost(False)

    def _upgrade(self, rest: bytes) -> None:
        req = self.requester
        status = self._parser.get_status_code()
        headers, self._headers = self._headers, []
        self.reusable = False
        if req is not None:
            req.response_upgrade(status, headers, rest)

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._in_head = True
        self._skip = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            self._headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._parser
        status = p.get_status_code()
        if 100 <= status < 200:
            # 101 continues in _upgrade (llhttp raises HttpParserUpgrade after this message);
            # 100/102/103 are not relayed (certgate answered Expect itself).
            self._skip = True
            return
        headers = self._headers
        keep = p.should_keep_alive()
        if not keep:
            self.reusable = False
        framing, length = F_CLOSE, -1
        if self.head_request or status in (204, 304):
            framing = F_NONE
            for k, v in headers:
                if k.lower() == b"content-length":
                    length = int(v) if v.isdigit() else -1
        else:
            for k, v in headers:
                kl = k.lower()
                if kl == b"content-length":
                    framing, length = F_LENGTH, int(v)
                elif kl == b"transfer-encoding":
                    if v.strip().lower() != b"chunked":
                        raise UpstreamProtocolError(f"unsupported transfer-encoding {v!r}")
                    framing = F_CHUNKED
            if framing == F_CLOSE:
                self.reusable = False
        self._done_head = True
        req = self.requester
        assert req is not None  # dataReceived feeds the parser only while a requester is attached
        req.response_head(status, headers, framing, length)
        if framing == F_NONE and self.head_request:
            # llhttp cannot know a HEAD response has no body: finish it here, fresh parser.
            self._parser = httptools.HttpResponseParser(self)
            self._finish()

    def on_body(self, data: bytes) -> None:
        if self.head_request:
            self.reusable = False
            return
        req = self.requester
        if req is not None:
            req.response_body(data)

    def on_message_complete(self) -> None:
        if self._skip:
            self._skip = False
            return
        if self.head_request:
            return
        self._finish()

    def _finish(self) -> None:
        req = self.requester
        self._done_head = False
        if req is not None:
            req.response_done()

    def start_request(self, requester: Requester, head_request: bool) -> None:
        """Attach ``requester`` for one request/response."""
        self.requester = requester
        self.head_request = head_request
        self._headers = []
        self._in_head = True


class _ConnFactory(ClientFactory):
    noisy = False

    def __init__(self, pool: "Pool", requester: Requester) -> None:
        self.pool = pool
        self.requester = requester
        self.started = pool.clock.seconds()  # for the connect-duration histogram

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        conn = UpstreamConnection(self.pool)
        conn.requester = self.requester  # reserved for this requester until connected
        conn.factory = self
        return conn

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.pool._connect_failed(self.requester, reason)


def _client_tls_creator(route: "Route") -> Any:
    """A client connection creator verifying the upstream as ``Route.tls`` says."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import SSL
    from twisted.internet import ssl

    tls = route.tls
    assert tls is not None
    client_cert = None
    if tls.client_certificate is not None:
        cert_pem = Path(tls.client_certificate).read_bytes()
        key_pem = Path(tls.client_key or tls.client_certificate).read_bytes()
        client_cert = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    if tls.unsafe_skip_verify:
        log.warn("route {route}: unsafe_skip_verify is set: the upstream certificate of {url} is NOT verified",
                 route=route.name, url=route.url)
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_verify(SSL.VERIFY_NONE)
        if client_cert is not None:
            key = serialization.load_pem_private_key(key_pem, None)
            ctx.use_certificate(x509.load_pem_x509_certificate(cert_pem))
            ctx.use_privatekey(key)  # type: ignore[arg-type]  # pyOpenSSL types only the key kinds it takes; another kind fails here at start
        return _UnverifiedCreator(ctx, tls.server_name)
    trust_root: Any
    if tls.ca is not None:
        pems = Path(tls.ca).read_bytes()
        certs = [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM))
                 for c in x509.load_pem_x509_certificates(pems)]
        trust_root = ssl.trustRootFromCertificates(certs)
    else:
        trust_root = ssl.platformTrust()
    return ssl.optionsForClientTLS(tls.server_name, trustRoot=trust_root, clientCertificate=client_cert)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    """Client connections that send SNI but verify nothing (``unsafe_skip_verify`` only)."""

    def __init__(self, ctx: Any, server_name: str) -> None:
        self._ctx = ctx
        self._sni = server_name.encode("idna") if server_name else None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from OpenSSL import SSL

        conn = SSL.Connection(self._ctx, None)
        if self._sni:
            conn.set_tlsext_host_name(self._sni)
        conn.set_app_data(tlsProtocol)
        return conn


class Pool:
    """Keep-alive connections to one route: at most ``max_connections`` open, ``max_idle`` idle."""

    fast_writes = True  # see proxy.http.fastwrite

    def __init__(self, route: "Route", clock: "Clock", reactor: Any) -> None:
        self.route = route
        self.clock = clock
        self.reactor = reactor
        self.idle: list[UpstreamConnection] = []
        self.open = 0  # connecting + busy + idle
        self.waiting: deque[Requester] = deque()
        self._creator = _client_tls_creator(route) if route.scheme == "https" else None
        self.closed = False
        self.connect_hist: Any = None  # histogram family labelled by route (set by UpstreamPools)

    def acquire(self, requester: Requester) -> None:
        """Give ``requester`` a connection now (idle), later (connect / wait) or fail it."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.connected:
                conn.reused = True
                conn.start_request(requester, False)
                requester.upstream_ready(conn)
                return
        if self.open >= self.route.max_connections:
            self.waiting.append(requester)
            return
        self._connect(requester)

    def _connect(self, requester: Requester) -> None:
        self.open += 1
        factory: Any = _ConnFactory(self, requester)
        if self._creator is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            # Twisted annotates clock as the zope interface IReactorTime, which mypy cannot match to a Protocol
            factory = TLSMemoryBIOFactory(self._creator, True, factory, clock=self.clock)  # type: ignore[arg-type]
            factory.clientConnectionFailed = lambda c, r, rq=requester: self._connect_failed(rq, r)
        self.reactor.connectTCP(self.route.host, self.route.port, factory, timeout=self.route.connect_timeout)

    def cancel(self, requester: Requester) -> None:
        """``requester`` no longer wants a connection (its client went away)."""
        try:
            self.waiting.remove(requester)
        except ValueError:
            pass

    def _connected(self, conn: UpstreamConnection) -> None:
        factory = getattr(conn, "factory", None)
        if factory is not None and self.connect_hist is not None:
            self.connect_hist.labels(self.route.name).observe(self.clock.seconds() - factory.started)
        req = conn.requester
        if req is None or getattr(req, "gone", False):
            conn.requester = None
            self._put_idle(conn)
            return
        conn.start_request(req, False)
        req.upstream_ready(conn)

    def _connect_failed(self, requester: Requester, reason: Failure) -> None:
        self.open -= 1
        status = 504 if reason.check(ierror.TimeoutError) else 502
        log.warn("upstream {route} ({host}:{port}): connect failed: {why}", route=self.route.name,
                 host=self.route.host, port=self.route.port, why=reason.getErrorMessage())
        if not getattr(requester, "gone", False):
            requester.upstream_failed(status)
        self._serve_waiter()

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """Return ``conn`` after a response; closed unless ``reusable`` and the pool wants it."""
        conn.requester = None
        conn.resume_reading()  # an idle connection must notice EOF
        if reusable and conn.reusable and conn.connected and not self.closed:
            if self.waiting:
                req = self.waiting.popleft()
                conn.reused = True
                conn.start_request(req, False)
                req.upstream_ready(conn)
                return
            if len(self.idle) < self.route.max_idle:
                self.idle.append(conn)
                return
        conn.loseConnection()

    def _put_idle(self, conn: UpstreamConnection) -> None:
        self.release(conn, True)

    def _lost(self, conn: UpstreamConnection) -> None:
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self._serve_waiter()

    def _serve_waiter(self) -> None:
        while self.waiting and self.open < self.route.max_connections and not self.closed:
            req = self.waiting.popleft()
            if not getattr(req, "gone", False):
                self._connect(req)

    def close(self) -> None:
        self.closed = True
        for conn in list(self.idle):
            conn.loseConnection()
        self.idle.clear()
        while self.waiting:
            req = self.waiting.popleft()
            if not getattr(req, "gone", False):
                req.upstream_failed(502)


class UpstreamPools:
    """One :class:`Pool` per route (keyed by route name)."""

    def __init__(self, routes: list["Route"], clock: "Clock", reactor: Any) -> None:
        self.clock = clock
        self.reactor = reactor
        self._pools: dict[str, Pool] = {r.name: Pool(r, clock, reactor) for r in routes}
        self.connect_hist: Any = None

    def use_metrics(self, metrics: Any) -> None:
        """Observe upstream TCP connect time per route."""
        self.connect_hist = metrics.histogram("upstream_connect_duration_seconds",
                                              "Upstream TCP connect time", ("route",))
        for p in self._pools.values():
            p.connect_hist = self.connect_hist

    def pool_for(self, route: "Route") -> Pool:
        """The pool of ``route`` (created on first use for a route not known at start)."""
        p = self._pools.get(route.name)
        if p is None or p.route is not route and p.route != route:
            p = self._pools[route.name] = Pool(route, self.clock, self.reactor)
            p.connect_hist = self.connect_hist
        return p

    def idle_count(self) -> int:
        return sum(len(p.idle) for p in self._pools.values())

    def close(self) -> None:
        for p in self._pools.values():
            p.close()
