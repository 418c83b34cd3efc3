"""The client side of certgate: TLS-wrapped HTTP/1.1 connections, parsed with llhttp.

``GatewayFactory`` builds one :class:`GatewayProtocol` per connection (wrapped by
``TLSMemoryBIOFactory``). The protocol:

- arms a handshake deadline at ``makeConnection`` and parses nothing before
  ``handshakeCompleted``, where ``identify(transport, now)`` fixes the connection identity
  (``None`` aborts the connection);
- parses request heads with ``httptools.HttpRequestParser`` under ``[limits]`` (414, 431, 413),
  a header deadline (slowloris), an idle keep-alive timeout and a maximum connection age
  (``Connection: close`` on the next response);
- hands every request head, pipelined or not, to ``gate.decide`` one at a time, in order, and
  answers in order; a decision may be a value or a Deferred;
- forwards (``proxy.http.upstream``) with the request and response bodies streamed and flow
  control both ways, or answers locally; switches to a WebSocket tunnel only after a validated
  101 (``proxy.http.tunnel``).

Errors certgate generates are short plain-text responses followed by ``Connection: close``.
"""

from __future__ import annotations

from typing import Any, Callable

import httptools
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from proxy.http.fastwrite import install as install_direct_write
from proxy.sessions.presence_rules import presence_kinds
from proxy.http.flow import (K_BODY, K_HANDSHAKE, K_HEADER, K_IDLE, K_NONE, K_UPSTREAM, P_BUFFER, P_DECIDE,
                              P_RAW, FlowMixin)
from proxy.http.forward import ForwardMixin
from proxy.http.local import LocalMixin
from proxy.http.wire import check_request, error_bytes, refusal_bytes
from proxy.http.headers import HeaderPolicy
from proxy.http.messages import ConnContext, Forward, Local, RequestHead, Response

log = Logger()

#: Request-body bytes certgate buffers for requests that cannot stream yet.
BUFFER_LIMIT = 256 * 1024
_NO_HEADERS: list[tuple[bytes, bytes]] = []  # shared placeholder, replaced per request


class _Limit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Req:
    """One request as the HTTP layer tracks it (the gate sees only ``head``)."""

    __slots__ = ("head", "facts", "complete", "chunks", "buffered", "sink", "on_complete", "received",
                 "limit", "error", "retried", "raw_target", "t0", "status", "t_up", "t_head", "out_bytes")

    def __init__(self, head: RequestHead | None, facts: Any, error: int = 0) -> None:
        self.head = head
        self.facts = facts
        self.complete = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.sink: Callable[[bytes], Any] | None = None
        self.on_complete: Callable[[], Any] | None = None
        self.received = 0
        self.limit: int | None = None
        self.error = error
        self.retried = False
        self.raw_target = b""  # the target as received (forwarded only by unsafe_forward_raw_target)
        self.t0 = 0.0  # when the gate got it; t_up: upstream connection ready; t_head: response head
        self.status = 0
        self.t_up = 0.0
        self.t_head = 0.0
        self.out_bytes = 0  # response body bytes sent to the client


@implementer(IHandshakeListener, IPushProducer)
class GatewayProtocol(FlowMixin, ForwardMixin, LocalMixin, Protocol):
    """One client connection. See the module docstring for what it guarantees."""

    # Slots keep an idle connection small (no per-instance dict).
    __slots__ = ("factory", "transport", "connected", "identity", "conn", "_clock", "gate", "_parser", "_parsing",
                 "_queue", "_active", "_incoming", "_hdrs", "_url", "_hsize", "_in_head", "_raw_guard", "_raw",
                 "_paused", "_buffered", "_closing", "gone", "_timer", "_dl", "_dl_kind", "_connected_at",
                 "_handshake_done", "_write_paused", "_out", "_up", "_tunnel", "_fwd", "_feeding", "_head_armed",
                 "_out_started_flag", "_resp_close", "_resp_framing", "_rechunk", "_dechunk", "_up_head", "_pool",
                 "_ours_key", "_ours", "_inject", "_identifying")

    def __init__(self, factory: "GatewayFactory") -> None:
        self.factory = factory
        self.transport: Any = None
        self.connected = 0
        self.identity: Any = None
        self.conn: ConnContext | None = None
        self._clock = factory.clock
        self.gate = factory.gate
        self._parser: Any = None  # created at the first request byte
        self._parsing = False
        self._queue: list[_Req] = []  # tiny (<= max_pipeline): a list beats a deque in memory
        self._active: _Req | None = None
        self._incoming: _Req | None = None
        self._hdrs: list[tuple[bytes, bytes]] = _NO_HEADERS
        self._url = b""
        self._hsize = 0
        self._in_head = False
        self._raw_guard = 0
        self._raw: list[bytes] = []  # client bytes held while not parsing (pre-handshake, upgrade)
        self._paused = 0
        self._buffered = 0
        self._closing = False
        self.gone = False
        self._timer: Any = None
        self._dl = 0.0
        self._dl_kind = K_NONE
        self._connected_at = 0.0
        self._handshake_done = False
        self._write_paused = False
        self._out: list[bytes] = []
        self._up: Any = None
        self._tunnel: Any = None
        self._fwd: Forward | None = None
        self._feeding = False
        self._head_armed = False
        self._out_started_flag = False
        self._resp_close = False
        self._resp_framing = 0
        self._rechunk = False
        self._dechunk = False
        self._up_head = b""
        self._pool: Any = None
        self._ours_key: Any = None
        self._ours = b""
        self._inject: Any = None  # proxy.sessions.presence.HtmlInjector for the current response, if any
        self._identifying = False  # identify() returned a Deferred (OCSP check, directory lookup) not fired yet

    # ------------------------------------------------------------------ connection life
    def makeConnection(self, transport: Any) -> None:
        f = self.factory
        self._connected_at = self._clock.seconds()
        if len(f.connections) >= f.max_connections:
            # [listen] max_connections: refuse before the (costly) TLS handshake.
            f.counters["refused"] += 1
            f.m_refused.inc()
            self.transport = transport
            self.gone = True
            transport.abortConnection()
            return
        f.connections.add(self)
        f.counters["connections"] += 1
        f.m_accepted.inc()
        super().makeConnection(transport)
        if self.factory.plain:
            self.handshakeCompleted()
        else:
            self._arm(K_HANDSHAKE, self.factory.handshake_timeout)

    def handshakeCompleted(self) -> None:
        if self._handshake_done or self._identifying or self.gone:
            return  # renegotiation is disabled; never re-identify
        now = self._clock.seconds()
        self.factory.m_handshake.observe(now - self._connected_at)  # the TLS handshake (no OCSP or directory wait)
        try:
            ident = self.factory.identify(self.transport, now)
        except Exception:
            log.failure("identify() failed; aborting the connection")
            ident = None
        if isinstance(ident, Deferred):
            # An OCSP answer or the account (mapping = ldap) is awaited: client bytes are held
            # and the handshake deadline keeps running until the identity is known.
            self._identifying = True
            ident.addCallbacks(self._identified, self._identify_failed)
            return
        self._identified(ident)

    def _identify_failed(self, failure: Failure) -> None:
        log.failure("identify() failed; aborting the connection", failure)
        self._identified(None)

    def _identified(self, ident: Any) -> None:
        """The connection's identity is fixed (None: abort); HTTP parsing starts."""
        self._identifying = False
        if self.gone:
            return
        self._handshake_done = True
        f = self.factory
        if f.draining:
            self._closing = True  # accepted just before the listener stopped: one answer, then close
        if ident is None:
            self.abort()
            return
        self.identity = ident
        host = self.transport.getHost()
        self.conn = ConnContext(identity=ident, connected_at=self._connected_at, scheme="https",
                                local_host=getattr(host, "host", ""), local_port=getattr(host, "port", 0))
        t = self.transport
        try:
            t.setTcpNoDelay(True)
        except Exception:  # pragma: no cover - memory transports in tests
            pass
        if f.fast_writes:
            # One write per response already: skip BufferingTLSTransport's next-iteration
            # aggregation, and send straight to the socket when nothing is queued.
            agg = getattr(t, "_aggregator", None)
            if agg is not None:
                agg.flush()
                t.write = TLSMemoryBIOProtocol.write.__get__(t)
            install_direct_write(getattr(t, "transport", None) if hasattr(t, "wrappedProtocol") else t)
        t.registerProducer(self, True)
        self._new_parser()
        self._arm_idle()
        if self._raw:
            raw, self._raw = b"".join(self._raw), []
            self.dataReceived(raw)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone = True
        f = self.factory
        if not self._handshake_done and f.handshake_failed is not None and self in f.connections:
            # before the handshake only its deadline (or a drain) aborts: _closing says "timed out"
            f.handshake_failed(self.transport, reason, self._closing)
        f.connections.discard(self)
        self._dl_kind = K_NONE
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        up, self._up = self._up, None
        if self._tunnel is not None:
            self._tunnel.lost()
            if up is not None:
                up.loseConnection()
            up = None
        if up is not None:
            up.abort()  # the client went away: the upstream request is cancelled
        elif self._fwd is not None:
            self.factory.pools.pool_for(self._fwd.route).cancel(self)
        self._queue.clear()
        if f.draining and not f.connections:
            f._drained()

    def drain(self) -> None:
        """Finish the request in flight (its response says Connection: close), then close."""
        self._closing = True
        if self._active is None and self._tunnel is None and not self._queue:
            self._close()

    def abort(self) -> None:
        """Drop the connection now (used by trust reloads and need-mode refusals)."""
        self._closing = True
        if self.transport is not None:
            self.transport.abortConnection()

    # tunnel "client end" interface
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def loseConnection(self) -> None:
        self._close()

    def abortConnection(self) -> None:
        self.abort()

    def _close(self) -> None:
        self._closing = True
        self._parsing = False
        t = self.transport
        if t is not None and not self.gone:
            t.unregisterProducer()
            t.loseConnection()

    # ------------------------------------------------------------------ parsing
    def _new_parser(self) -> None:
        """Parse HTTP from the next byte on (the llhttp parser itself is made at that byte)."""
        self._parser = None
        self._parsing = True
        self._in_head = False

    def dataReceived(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.from_client(data)
            return
        if not self._parsing:
            if not self._handshake_done or self._raw_wanted():
                self._raw.append(data)
                if sum(map(len, self._raw)) > BUFFER_LIMIT:
                    self._pause(P_RAW)
            return
        if self._in_head:
            # Bytes of a head that began in an earlier read (exact limits are in the callbacks).
            self._raw_guard += len(data)
            if self._raw_guard > self.factory.max_head:
                self._parse_failed(431 if self._hdrs else 414)
                return
        elif self._dl_kind == K_BODY:
            self._arm(K_BODY, self.factory.idle_timeout)
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        self._feeding = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._feeding = False
            self._upgraded(data[e.args[0]:])
        except httptools.HttpParserCallbackError as e:
            self._feeding = False
            ctx = e.__context__
            if isinstance(ctx, _Limit):
                self._parse_failed(ctx.status)
            else:
                log.failure("internal error while parsing a request",
                            Failure(ctx) if isinstance(ctx, BaseException) else None)
                self._parse_failed(500)
        except httptools.HttpParserError as e:
            self._feeding = False
            if self._last_closes() and "after `Connection: close`" in str(e):
                self._parsing = False  # bytes after a request that ends the connection: ignored
            else:
                self._parse_failed(400)
        self._feeding = False
        if self._in_head and not self._head_armed and self._parsing:
            self._head_armed = True  # header deadline, counted from the read that began the head
            self._arm(K_HEADER, self.factory.header_timeout)
        if self._buffered > BUFFER_LIMIT or len(self._queue) > 1:
            self._pause(P_BUFFER)  # parse ahead at most one read: pipelined requests wait their turn

    def _upgraded(self, rest: bytes) -> None:
        """llhttp stopped after an upgrade head; ``rest`` are the bytes that followed it."""
        self._parsing = False
        a = self._active
        if a is not None and a.facts.websocket:
            if rest:
                self._raw.append(rest)  # held until the upstream answers (101 or not)
            self._pause(P_RAW)
        elif not self._closing and not self.gone and a is None and not self._queue:
            # Already answered locally (e.g. 401) on a keep-alive connection: back to HTTP.
            self._new_parser()
            if rest:
                self.dataReceived(rest)

    def _raw_wanted(self) -> bool:
        a = self._active
        return a is not None and a.facts.websocket

    def _last_closes(self) -> bool:
        q = self._queue
        return bool(q) and not q[-1].facts.keep_alive

    # parser callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        if not self._parsing:
            return
        self._hdrs = []
        self._url = b""
        self._hsize = 0
        self._in_head = True
        self._raw_guard = 0
        self._head_armed = False  # armed after this read if the head is still incomplete

    def on_url(self, url: bytes) -> None:
        if not self._parsing:
            return
        self._url += url
        if len(self._url) > self.factory.max_request_line:
            raise _Limit(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head or not self._parsing:
            return  # trailers of a chunked request body: dropped
        f = self.factory
        self._hsize += len(name) + len(value) + 4
        hdrs = self._hdrs
        if len(hdrs) >= f.max_headers or self._hsize > f.max_header_size:
            raise _Limit(431)
        if value[-1:] in b" \t" and value:
            value = value.rstrip(b" \t")
        hdrs.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if not self._parsing:
            return
        p = self._parser
        method = p.get_method()
        version = p.get_http_version().encode()
        raw = self._url
        facts = check_request(method, raw, version, self._hdrs, p.should_upgrade())
        # Decisions and the forwarded request use the canonical target (proxy.http.paths), never ``raw``.
        head = RequestHead(method, facts.target or raw, version, self._hdrs, facts.websocket, facts.keep_alive,
                           facts.chunked or bool(facts.content_length))
        self._hdrs = _NO_HEADERS  # the head owns them now; an idle connection keeps nothing
        self._url = b""
        r = _Req(head, facts, facts.error)
        r.raw_target = raw
        if facts.why:
            ident = self.identity
            log.info("request refused ({status}) from {ip}: {why}; target {target}", status=facts.error,
                     ip=getattr(ident, "client_ip", "?"), why=facts.why, target=ascii(raw[:200]))
        if facts.error:
            self._parsing = False  # framing no longer trusted: nothing after this is parsed
        elif len(self._queue) >= self.factory.max_pipeline:
            r.error = 503
            self._parsing = False
        self._incoming = r
        self._queue.append(r)
        if self._active is None:
            self._start(r)

    def on_body(self, data: bytes) -> None:
        r = self._incoming
        if r is None:
            return
        sink = r.sink
        if sink is not None:
            sink(data)
        else:
            r.chunks.append(data)
            r.buffered += len(data)
            self._buffered += len(data)

    def on_message_complete(self) -> None:
        r = self._incoming
        if r is None:
            return
        self._incoming = None
        r.complete = True
        if not r.facts.keep_alive:
            self._parsing = False  # nothing after a request that closes the connection is parsed
        cb = r.on_complete
        if cb is not None:
            r.on_complete = None
            cb()

    # ------------------------------------------------------------------ errors
    def _parse_failed(self, status: int) -> None:
        """The parser refused input: answer ``status`` after what is queued, then close."""
        self._parsing = False
        self._in_head = False
        r, self._incoming = self._incoming, None
        if r is not None and r is self._active:
            # The body of the request being handled is broken: cancel it (and its upstream).
            self._fail_active(400 if status == 500 else status)
            return
        err = _Req(None, None, status)
        self._queue.append(err)
        if self._active is None:
            self._start(err)

    def _error_now(self, status: int, why: str = "") -> None:
        """Answer ``status`` (with certgate's one-line ``why``) unless a response already began,
        cancel the exchange, close."""
        a = self._active
        if not self._out_started():
            self.transport.write(refusal_bytes(status, why) if why else error_bytes(status))
            self.factory.counters["errors"] += 1
            if a is not None:
                a.status = status
        if a is not None and self.factory.request_done is not None:
            self.factory.request_done(self, a)
        self._cancel_upstream()
        self._active = None
        self._fwd = None
        self._incoming = None
        self._queue.clear()
        self._close()

    def _fail_active(self, status: int) -> None:
        if self._out_started():
            self._cancel_upstream()
            self.abort()
        else:
            self._error_now(status)

    # ------------------------------------------------------------------ request processing
    def _start(self, r: _Req) -> None:
        self._active = r
        r.t0 = self._clock.seconds()
        self._out_started_flag = False
        self._up = None
        self._dl_kind = K_NONE
        if r.error:
            self._error_now(r.error, r.facts.why if r.facts is not None else "")
            return
        conn = self.conn
        conn.requests += 1  # type: ignore[union-attr]
        self.factory.counters["requests"] += 1
        try:
            d = self.gate.decide(r.head, conn)
        except Exception:
            log.failure("gate.decide failed")
            self._error_now(500)
            return
        if type(d) is Forward:
            self._forward(r, d)
        elif isinstance(d, Deferred):
            self._pause(P_DECIDE)
            # A decision that never comes (a stuck store) ends in 504 like a silent upstream.
            self._arm(K_UPSTREAM, self.factory.config.default_route.read_timeout)
            d.addCallbacks(self._decided, self._decide_failed, callbackArgs=(r,), errbackArgs=(r,))
        else:
            self._decided(d, r)

    def _decided(self, d: Any, r: _Req) -> None:
        if self.gone or self._active is not r:
            return
        self._resume(P_DECIDE)
        self._dl_kind = K_NONE
        if isinstance(d, Forward):
            self._forward(r, d)
        elif isinstance(d, Response):
            self._respond(r, d)
        elif isinstance(d, Local):
            self._local(r, d)
        else:
            log.error("gate returned {d!r}, not a Decision", d=d)
            self._error_now(500)

    def _decide_failed(self, f: Failure, r: _Req) -> None:
        if self.gone or self._active is not r:
            return
        log.failure("gate.decide failed", f)
        self._error_now(500)

    def _drop_buffered(self, r: _Req) -> None:
        """Forget ``r``'s held body bytes (consumed or discarded)."""
        self._buffered -= r.buffered
        r.chunks = []
        r.buffered = 0

    def _age_exceeded(self) -> bool:
        age = self.factory.max_connection_age
        return bool(age) and self._clock.seconds() - self._connected_at >= age

    def _finish(self, close: bool) -> None:
        """The active request is answered; start the next one or go idle (or close)."""
        done = self.factory.request_done
        if done is not None and self._active is not None:
            done(self, self._active)
        q = self._queue
        if q:
            del q[0]
        self._active = None
        self._fwd = None
        if close or self._closing:
            self._close()
            return
        self._resume(P_BUFFER)
        if q:
            self._start(q[0])
        elif self._parsing:
            self._arm_idle()
        else:
            self._after_upgrade_refused()

    def _arm_idle(self) -> None:
        """Wait for the next request: ``idle_timeout``, but never past the connection's maximum age.

        A browser keeps idle connections in its pool and sends any request (a presence ping)
        on any of them; one whose handshake is old proves the card only as of that handshake.
        Closing idle connections by age means every request travels on a connection at most
        ``max_connection_age`` (capped by ``presence_interval``) old.
        """
        f = self.factory
        wait = f.idle_timeout
        age = f.max_connection_age
        if age:
            left = self._connected_at + age - self._clock.seconds()
            if left < wait:
                wait = left if left > 0.0 else 0.0
        self._arm(K_IDLE, wait)


class GatewayFactory(Factory):
    """Builds :class:`GatewayProtocol`; holds the per-worker settings read once from ``config``.

    ``connections`` is the set of live protocols (each has ``identity`` and ``abort()``).
    ``counters`` counts requests, errors and upstream failures (read by the metrics endpoint).
    """

    protocol = GatewayProtocol  # type: ignore[assignment]
    noisy = False
    plain = False  # True only in PlainGatewayFactory (profiling/tests without TLS)
    fast_writes = True  # see proxy.http.fastwrite; False restores Twisted's stock write path

    def __init__(self, *, gate: Any, identify: Callable[[Any, float], Any], config: Any, pools: Any,
                 clock: Any, tunnels: Any, metrics: Any = None) -> None:
        self.gate = gate
        self.identify = identify
        self.config = config
        self.pools = pools
        self.clock = clock
        self.tunnels = tunnels
        self.metrics = metrics
        self.connections: set[GatewayProtocol] = set()
        self.draining = False
        self._drain_waiters: list[Deferred[None]] = []
        self.counters: dict[str, int] = {"connections": 0, "refused": 0, "requests": 0, "errors": 0,
                                         "upstream_errors": 0, "tunnels": 0}
        #: called with (protocol, request) once per answered request (metrics, access log)
        self.request_done: Callable[[Any, Any], None] | None = None
        #: called with (transport, reason, timed_out) when a connection ends before its handshake did
        self.handshake_failed: Callable[[Any, Any, bool], None] | None = None
        from proxy.observe.metrics import NOOP

        self.m_accepted = self.m_refused = self.m_handshake = self.m_upstream_errors = self.m_tunnels = NOOP
        listen, limits, ws = config.listen, config.limits, config.websocket
        self.max_connections = int(getattr(listen, "max_connections", 10000))
        self.handshake_timeout = float(listen.handshake_timeout)
        self.header_timeout = float(listen.header_timeout)
        self.idle_timeout = float(listen.idle_timeout)
        sessions = getattr(config, "sessions", None)
        interval = float(getattr(sessions, "presence_interval", None) or 30.0)
        age = float(listen.max_connection_age)
        # Connections live at most presence_interval after their handshake (see _arm_idle).
        self.max_connection_age = min(age, interval) if age else interval
        self.max_request_line = int(limits.max_request_line)
        self.max_header_size = int(limits.max_header_size)
        self.max_head = self.max_request_line + self.max_header_size
        self.max_headers = int(limits.max_headers)
        self.max_body_unauth = int(limits.max_body_unauthenticated)
        self.max_body = int(limits.max_body)
        self.max_pipeline = int(limits.max_pipeline)
        self.ws_origins = frozenset(o.encode("latin-1") for o in ws.origins)
        self.ws_idle_timeout = float(ws.idle_timeout)
        self.header_policy = HeaderPolicy.from_config(config.headers)
        #: route kinds whose session pages get the presence script (None: every kind)
        self.presence_kinds = presence_kinds(getattr(sessions, "inject_presence_script", "auto"))
        self.inject_presence = self.presence_kinds is None or bool(self.presence_kinds)
        self.presence_interval = interval
        if metrics is not None and hasattr(metrics, "gauge"):
            self._register_metrics(metrics)

    def _register_metrics(self, metrics: Any) -> None:
        """Connection counters, the handshake histogram and the open-connection gauge."""
        metrics.gauge("http_connections", "Client connections open", (),
                      lambda: [((), float(len(self.connections)))])
        self.m_accepted = metrics.counter("http_connections_accepted_total", "Client connections accepted").labels()
        self.m_refused = metrics.counter("http_connections_refused_total",
                                         "Client connections refused by [listen] max_connections").labels()
        self.m_handshake = metrics.histogram("tls_handshake_duration_seconds",
                                             "TCP accept to completed TLS handshake").labels()
        self.m_upstream_errors = metrics.counter("upstream_errors_total",
                                                 "Upstream failures answered 502/504").labels()
        self.m_tunnels = metrics.counter("websocket_tunnels_opened_total", "WebSocket tunnels opened").labels()

    def drain(self, timeout: float) -> Deferred[None]:
        """Graceful stop: idle connections close now, busy ones after their current response.

        The Deferred fires when no connection is left, or after ``timeout`` seconds, when the
        rest are aborted. Tunnels are not touched here (the service closes them with 1001).
        """
        self.draining = True
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        for p in list(self.connections):
            p.drain()
        if not self.connections:
            self._drained()
        else:
            call = self.clock.callLater(timeout, self._drain_expired)
            d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d

    def _drain_expired(self) -> None:
        for p in list(self.connections):
            p.abort()
        self._drained()

    def _drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    def buildProtocol(self, addr: Any) -> GatewayProtocol:
        p = GatewayProtocol(self)
        return p


class PlainGatewayFactory(GatewayFactory):
    """The same HTTP layer over plain TCP: identify(transport, now) is called at connect.

    For profiling and tests only; the service always listens with TLS.
    """

    plain = True
