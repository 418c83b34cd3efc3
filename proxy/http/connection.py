"""The client side of certgate: TLS-wrapped HTTP/1.1 connections, parsed with llhttp.

``GatewayFactory`` (:mod:`proxy.http.factory`) builds one :class:`GatewayProtocol` per
connection (wrapped by ``TLSMemoryBIOFactory``). The connection plays Twisted's roles (the
protocol, the handshake listener, the streaming producer of its transport, a tunnel's client
end), orders the requests, and holds four parts behind the interfaces of :mod:`proxy.http.parts`:
:class:`~proxy.http.reader.RequestReader` (llhttp's target), :class:`~proxy.http.flow.Flow`
(pause reasons, the one deadline), :class:`~proxy.http.forward.Forwarder` (upstream; the pool's
requester) and :class:`~proxy.http.local.LocalAnswers`. Each request is one
:class:`~proxy.http.exchange.Exchange`, whose states and transitions are one table. The connection:

- arms a handshake deadline at ``makeConnection`` and parses nothing before
  ``handshakeCompleted``, where ``identify(transport, now)`` fixes the connection identity
  (``None`` aborts the connection);
- parses request heads with ``httptools.HttpRequestParser`` under ``[limits]`` (414, 431, 413),
  a header deadline (slowloris), an idle keep-alive timeout and a maximum connection age
  (``Connection: close`` on the next response);
- hands every request head, pipelined or not, to ``gate.decide`` one at a time, in order, and
  answers in order; a decision may be a value or a Deferred;
- forwards with the request and response bodies streamed and flow control both ways, or
  answers locally; switches to a WebSocket tunnel only after a validated 101.

Errors certgate generates are short plain-text responses followed by ``Connection: close``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from proxy.http.exchange import DECIDE_LATER, FAIL, RELAYING, Exchange
from proxy.http.fastwrite import install as install_direct_write
from proxy.http.flow import K_BODY, K_HANDSHAKE, K_HEADER, K_IDLE, K_UPSTREAM, P_BUFFER, P_DECIDE, P_RAW, Flow
from proxy.http.forward import Forwarder
from proxy.http.local import LocalAnswers
from proxy.http.messages import ConnContext, Forward, Local, Response
from proxy.http.reader import RequestReader
from proxy.http.wire import error_bytes, error_page_bytes, refusal_bytes

if TYPE_CHECKING:  # pragma: no cover
    from proxy.http.parts import Engine, Tunnel

log = Logger()

#: Request-body bytes certgate buffers for requests that cannot stream yet.
BUFFER_LIMIT = 256 * 1024


@implementer(IHandshakeListener, IPushProducer)
class GatewayProtocol(Protocol):
    """One client connection. See the module docstring for what it guarantees."""

    # Slots keep an idle connection small (no per-instance dict).
    __slots__ = ("factory", "transport", "connected", "identity", "conn", "clock", "gate", "flow", "reader",
                 "forward", "local", "active", "closing", "gone", "tunnel", "_queue", "_raw", "_connected_at",
                 "_handshake_done", "_identifying")

    def __init__(self, factory: "Engine") -> None:
        self.factory = factory
        self.transport: Any = None  # a TLS (or TCP) transport; Twisted's interfaces are not typed for mypy
        self.connected = 0
        self.identity: Any = None  # proxy.listener.identity.ConnectionIdentity once identified
        self.conn: ConnContext | None = None
        self.clock = factory.clock
        self.gate = factory.gate
        self.flow = Flow(self, factory.clock, factory.wheel)
        self.reader = RequestReader(self)
        self.forward = Forwarder(self)
        self.local = LocalAnswers(self)
        self.active: Exchange | None = None  # the exchange being answered (the queue's first)
        self.closing = False
        self.gone = False
        self.tunnel: Tunnel | None = None
        self._queue: list[Exchange] = []  # tiny (<= max_pipeline): a list beats a deque in memory
        self._raw: list[bytes] = []  # client bytes held while not parsing (pre-handshake, upgrade)
        self._connected_at = 0.0
        self._handshake_done = False
        self._identifying = False  # identify() returned a Deferred (OCSP check, directory lookup) not fired yet

    # ------------------------------------------------------------------ connection life
    def makeConnection(self, transport: Any) -> None:
        f = self.factory
        self._connected_at = self.clock.seconds()
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
        self.flow.attach(transport)
        self.await_handshake()

    def await_handshake(self) -> None:
        """Wait (bounded by ``handshake_timeout``) for ``handshakeCompleted``."""
        self.flow.arm(K_HANDSHAKE, self.factory.handshake_timeout)

    def handshakeCompleted(self) -> None:
        if self._handshake_done or self._identifying or self.gone:
            return  # renegotiation is disabled; never re-identify
        now = self.clock.seconds()
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
            self.closing = True  # accepted just before the listener stopped: one answer, then close
        if ident is None:
            self.abort()
            return
        self.identity = ident
        t = self.transport
        host = t.getHost()
        self.conn = ConnContext(identity=ident, connected_at=self._connected_at, scheme="https",
                                local_host=getattr(host, "host", ""), local_port=getattr(host, "port", 0))
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
        self.reader.restart()
        self._arm_idle()
        if self._raw:
            raw, self._raw = b"".join(self._raw), []
            self.dataReceived(raw)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone = True
        f = self.factory
        if not self._handshake_done and f.handshake_failed is not None and self in f.connections:
            # before the handshake only its deadline (or a drain) aborts: closing says "timed out"
            f.handshake_failed(self.transport, reason, self.closing)
        f.connections.discard(self)
        self.flow.stop()
        a = self.active
        if a is not None and not a.finished:
            a.advance(FAIL)  # dropped with its connection
        if self.tunnel is not None:
            self.tunnel.lost()
            up, self.forward.up = self.forward.up, None
            if up is not None:
                up.loseConnection()
        else:
            self.forward.client_lost()
        self._queue.clear()
        if f.draining and not f.connections:
            f.drained()

    def drain(self) -> None:
        """Finish the request in flight (its response says Connection: close), then close."""
        self.closing = True
        if self.active is None and self.tunnel is None and not self._queue:
            self.close()

    def abort(self) -> None:
        """Drop the connection now (used by trust reloads and need-mode refusals)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abortConnection()

    def abort_exchange(self) -> None:
        """The active exchange cannot be answered any more (its response began): drop it and the connection."""
        a, self.active = self.active, None
        if a is not None and not a.finished:
            a.advance(FAIL)
        self.abort()

    # the producer of the client transport: a full client write buffer pauses the upstream read
    def pauseProducing(self) -> None:
        self.flow.write_paused = True
        self.forward.pause_reading()

    def resumeProducing(self) -> None:
        self.flow.write_paused = False
        self.forward.resume_reading()

    def stopProducing(self) -> None:
        pass

    # the tunnel's "client end"
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def loseConnection(self) -> None:
        self.close()

    def abortConnection(self) -> None:
        self.abort()

    def close(self) -> None:
        """Stop parsing; close after what was written."""
        self.closing = True
        self.reader.parsing = False
        t = self.transport
        if t is not None and not self.gone:
            t.unregisterProducer()
            t.loseConnection()

    def become_tunnel(self, tunnel: "Tunnel") -> None:
        """A validated 101: from now on client bytes go to ``tunnel`` (it has its own idle timer)."""
        self.tunnel = tunnel
        self.flow.disarm()
        self._queue.clear()
        self.active = None

    def tunnel_open(self) -> None:
        """The tunnel is registered: hand it the client bytes held since the upgrade, read again."""
        raw, self._raw = b"".join(self._raw), []
        if raw and self.tunnel is not None:
            self.tunnel.from_client(raw)
        self.flow.resume(P_RAW)
        self.flow.resume(P_BUFFER)

    # ------------------------------------------------------------------ reading
    def dataReceived(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        reader = self.reader
        if not reader.parsing:
            if not self._handshake_done or self._raw_wanted():
                self._raw.append(data)
                if sum(map(len, self._raw)) > BUFFER_LIMIT:
                    self.flow.pause(P_RAW)
            return
        reader.feed(data)
        if reader.buffered > BUFFER_LIMIT or len(self._queue) > 1:
            self.flow.pause(P_BUFFER)  # parse ahead at most one read: pipelined requests wait their turn

    def upgraded(self, rest: bytes) -> None:
        """llhttp stopped after an upgrade head; ``rest`` are the bytes that followed it."""
        self.reader.parsing = False
        a = self.active
        if a is not None and a.facts is not None and a.facts.websocket:
            if rest:
                self._raw.append(rest)  # held until the upstream answers (101 or not)
            self.flow.pause(P_RAW)
        elif not self.closing and not self.gone and a is None and not self._queue:
            # Already answered locally (e.g. 401) on a keep-alive connection: back to HTTP.
            self.reader.restart()
            if rest:
                self.dataReceived(rest)

    def _raw_wanted(self) -> bool:
        a = self.active
        return a is not None and a.facts is not None and a.facts.websocket

    def last_closes(self) -> bool:
        """The last request read ends the connection (``Connection: close``)."""
        q = self._queue
        return bool(q) and q[-1].facts is not None and not q[-1].facts.keep_alive

    def admit(self, ex: Exchange) -> None:
        """A request was read: answered in order, now if nothing is before it (503 past ``max_pipeline``)."""
        q = self._queue
        if not ex.error and len(q) >= self.factory.max_pipeline:
            ex.error = 503
            self.reader.parsing = False
        q.append(ex)
        if self.active is None:
            self._start(ex)

    # ------------------------------------------------------------------ errors
    def parse_failed(self, status: int) -> None:
        """The parser refused input: answer ``status`` after what is queued, then close."""
        ex = self.reader.failed()
        if ex is not None and ex is self.active:
            # The body of the request being handled is broken: cancel it (and its upstream).
            self.fail_active(400 if status == 500 else status)
            return
        err = Exchange(None, None, status)
        self._queue.append(err)
        if self.active is None:
            self._start(err)

    def error_now(self, status: int, why: str = "") -> None:
        """Answer ``status`` unless a response already began (a page for a browser's GET of a page,
        :func:`~proxy.http.wire.error_page_bytes`, else plain text with certgate's one-line
        ``why``), fail the exchange, cancel its upstream side, close."""
        a = self.active
        if a is None or a.state != RELAYING:
            head = a.head if a is not None else None
            page = error_page_bytes(status) if head is not None and head.method == b"GET" and head.wants_html() else None
            self.transport.write(page or (refusal_bytes(status, why) if why else error_bytes(status)))
            self.factory.counters["errors"] += 1
            if a is not None:
                a.status = status
        if a is not None:
            a.advance(FAIL)
            if self.factory.request_done is not None:
                self.factory.request_done(self, a)
        self.forward.cancel()
        self.active = None
        self.reader.incoming = None
        self._queue.clear()
        self.close()

    def fail_active(self, status: int) -> None:
        """The active exchange failed: ``status`` if nothing was answered yet, else drop the connection."""
        a = self.active
        if a is not None and a.state == RELAYING:
            self.forward.cancel()
            self.abort_exchange()
        else:
            self.error_now(status)

    def deadline(self, kind: int) -> None:
        """A deadline of :class:`~proxy.http.flow.Flow` passed."""
        if kind == K_HANDSHAKE:
            self.abort()
        elif kind == K_IDLE:
            self.close()
        elif kind == K_HEADER:
            self.error_now(408)
        elif kind == K_BODY:
            self.fail_active(408)
        elif kind == K_UPSTREAM:
            a = self.active
            if a is None:
                return
            if a.state == RELAYING:
                self.forward.cancel()
                self.abort_exchange()
            else:  # no upstream answer, or a decision or local handler that never came
                self.factory.counters["upstream_errors"] += 1
                self.factory.m_upstream_errors.inc()
                self.error_now(504)

    # ------------------------------------------------------------------ request processing
    def _start(self, ex: Exchange) -> None:
        self.active = ex
        ex.t0 = self.clock.seconds()
        self.flow.disarm()
        if ex.error:
            self.error_now(ex.error, ex.facts.why if ex.facts is not None else "")
            return
        conn = self.conn
        assert conn is not None and ex.head is not None
        conn.requests += 1
        self.factory.counters["requests"] += 1
        try:
            d = self.gate.decide(ex.head, conn)
        except Exception:
            log.failure("gate.decide failed")
            self.error_now(500)
            return
        if type(d) is Forward:
            self.forward.start(ex, d)
        elif isinstance(d, Deferred):
            self.wait_for(ex, d, DECIDE_LATER, self._decided)
        else:
            self._decided(d, ex)

    def wait_for(self, ex: Exchange, d: "Deferred[Any]", event: int,
                 then: Callable[[Any, Exchange], None]) -> None:
        """Park ``ex`` on ``d`` (a decision or a local answer still to come) after ``event``.

        Reading pauses and the upstream read deadline is armed, so an answer that never comes
        (a stuck store) ends in 504 like a silent upstream; ``d``'s result goes to ``then`` and
        its failure to :meth:`decide_failed`. ``then`` checks that ``ex`` is still active.
        """
        ex.advance(event)
        self.flow.pause(P_DECIDE)
        self.flow.arm(K_UPSTREAM, self.factory.config.default_route.read_timeout)
        d.addCallbacks(then, self.decide_failed, callbackArgs=(ex,), errbackArgs=(ex,))

    def _decided(self, d: Any, ex: Exchange) -> None:
        if self.gone or self.active is not ex:
            return
        self.flow.resume(P_DECIDE)
        self.flow.disarm()
        if isinstance(d, Forward):
            self.forward.start(ex, d)
        elif isinstance(d, Response):
            self.local.respond(ex, d)
        elif isinstance(d, Local):
            self.local.start(ex, d)
        else:
            log.error("gate returned {d!r}, not a Decision", d=d)
            self.error_now(500)

    def decide_failed(self, failure: Failure, ex: Exchange) -> None:
        """The gate's (or a local handler's) Deferred failed: 500."""
        if self.gone or self.active is not ex:
            return
        log.failure("gate.decide failed", failure)
        self.error_now(500)

    def drop_buffered(self, ex: Exchange) -> None:
        """Forget ``ex``'s held body bytes (consumed or discarded)."""
        self.reader.drop_buffered(ex)

    def age_exceeded(self) -> bool:
        """True once the connection is older than its maximum age (its next response closes it)."""
        age = self.factory.max_connection_age
        return bool(age) and self.clock.seconds() - self._connected_at >= age

    def finish(self, close: bool) -> None:
        """The active exchange is answered (DONE): start the next one or go idle (or close)."""
        done = self.factory.request_done
        a = self.active
        if done is not None and a is not None:
            done(self, a)
        q = self._queue
        if q:
            del q[0]
        self.active = None
        if close or self.closing:
            self.close()
            return
        self.flow.resume(P_BUFFER)
        if q:
            self._start(q[0])
        elif self.reader.parsing:
            self._arm_idle()
        else:
            self._after_upgrade_refused()

    def _after_upgrade_refused(self) -> None:
        """A WebSocket request got a normal answer: go back to HTTP with the held bytes."""
        if self.reader.feeding or self.closing:
            return  # dataReceived resumes parsing after the current feed
        self.reader.restart()
        self.flow.resume(P_RAW)
        self._arm_idle()
        raw, self._raw = b"".join(self._raw), []
        if raw:
            self.dataReceived(raw)

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
            left = self._connected_at + age - self.clock.seconds()
            if left < wait:
                wait = left if left > 0.0 else 0.0
        self.flow.arm(K_IDLE, wait)

