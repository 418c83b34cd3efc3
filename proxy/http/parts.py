"""The declared seams inside the HTTP engine: what a connection's parts offer and what they may use.

A :class:`proxy.http.connection.GatewayProtocol` holds four parts, each behind a small
interface here: the request reader (:class:`Reading`, :mod:`proxy.http.reader`), flow control
and deadlines (:class:`FlowControl`, :mod:`proxy.http.flow`),
forwarding (:class:`Forwarding`, :mod:`proxy.http.forward`; it is also the upstream pool's
``Requester``) and local answers (:class:`LocalAnswering`, :mod:`proxy.http.local`). The parts
reach their connection only through :class:`Host`, and the connection and its parts reach
their factory (:class:`proxy.http.factory.GatewayFactory`) only through :class:`Engine`; the
factory and the trust reload see a connection as a :class:`Connection`. Nothing here does anything.

This module sits below every part, the connection and the factory, and above what they share:
it names the per-request :class:`~proxy.http.exchange.Exchange` (a value every part works on, not
a part), the engine's messages, the upstream pools and the tunnel registry (the factory's shared
registries), and :class:`proxy.clock.Clock`. A part, the connection, the factory or a tunnel is
named here only by its Protocol, so no part's module is needed to describe another's seam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from proxy.clock import Clock
    from proxy.config import Config
    from proxy.http.exchange import Exchange
    from proxy.http.headers import HeaderPolicy
    from proxy.http.messages import ConnContext, Forward, Local, RequestGate, Response
    from proxy.http.tunnel import TunnelRegistry
    from proxy.http.upstream import UpstreamPools
    from proxy.observe.seams import MetricChild
    from proxy.timerwheel import TimerWheel

#: ``request_done(connection, exchange)``: once per answered request (metrics, access log).
RequestDone = Callable[[Any, "Exchange"], None]
#: ``handshake_failed(transport, reason, timed_out)``: a connection ended before its handshake did.
HandshakeFailed = Callable[[Any, Any, bool], None]


class Connection(Protocol):
    """A client connection as its factory, draining and trust reloads use it."""

    identity: Any  # proxy.listener.identity.ConnectionIdentity once the handshake is done

    def drain(self) -> None: ...

    def abort(self) -> None: ...


class Engine(Protocol):
    """What a connection and its parts use of their factory: the wiring, the settings read once
    from the configuration, the live connections, the counters and the service's hooks."""

    gate: RequestGate
    identify: Callable[[Any, float], Any]  # (transport, now) -> identity, None, or a Deferred of one
    config: Config
    pools: UpstreamPools
    clock: Clock
    wheel: TimerWheel  # every connection's deadline (proxy.http.flow.Flow)
    tunnels: TunnelRegistry
    connections: set[Connection]
    draining: bool
    counters: dict[str, int]
    request_done: RequestDone | None
    handshake_failed: HandshakeFailed | None
    fast_writes: bool
    m_accepted: MetricChild
    m_refused: MetricChild
    m_handshake: MetricChild
    m_upstream_errors: MetricChild
    m_tunnels: MetricChild
    # [listen], [limits], [websocket] and [headers], read once
    max_connections: int
    handshake_timeout: float
    header_timeout: float
    idle_timeout: float
    max_connection_age: float
    max_request_line: int
    max_header_size: int
    max_head: int
    max_headers: int
    max_body_unauth: int
    max_body: int
    max_pipeline: int
    ws_origins: frozenset[bytes]
    ws_idle_timeout: float
    header_policy: HeaderPolicy

    def drained(self) -> None: ...


class Tunnel(Protocol):
    """A WebSocket tunnel as its connection uses it (:class:`proxy.http.tunnel.WebSocketTunnel`)."""

    def from_client(self, data: bytes) -> None: ...

    def lost(self) -> None: ...


class UpstreamEnd(Protocol):
    """The upstream connection a client connection holds (a tunnel's too), as the connection uses it."""

    def loseConnection(self) -> None: ...  # noqa: N802 (Twisted's name)


class Pausable(Protocol):
    """A transport whose reading can be paused (``IProducer``)."""

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


class FlowControl(Protocol):
    """Why reading from the client is paused (a set of ``P_*`` bits), and the one deadline."""

    kind: int  # the armed deadline's kind (K_NONE: none)
    write_paused: bool  # the client's write buffer is full

    def pause(self, bit: int) -> None: ...

    def resume(self, bit: int) -> None: ...

    def arm(self, kind: int, seconds: float) -> None: ...

    def disarm(self) -> None: ...

    def stop(self) -> None: ...


class Forwarding(Protocol):
    """The forwarding part: request upstream, response back, the 101 splice."""

    @property
    def up(self) -> UpstreamEnd | None:
        """The upstream connection in use (also a tunnel's)."""

    @up.setter
    def up(self, conn: None) -> None:
        """Only ever dropped from outside (the connection takes a tunnel's upstream to close it)."""

    def start(self, ex: Exchange, fwd: Forward) -> None: ...

    def go(self, ex: Exchange, dechunk: bool) -> None: ...

    def body(self, ex: Exchange, data: bytes) -> None: ...

    def body_sent(self, ex: Exchange) -> None: ...

    def cancel(self) -> None: ...

    def client_lost(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class LocalAnswering(Protocol):
    """The local-answer part: ``Response`` and ``Local`` decisions."""

    def respond(self, ex: Exchange, resp: Response) -> None: ...

    def start(self, ex: Exchange, local: Local) -> None: ...

    def run(self, ex: Exchange) -> None: ...


class Reading(Protocol):
    """The request reader: llhttp's target; it makes one exchange per head and routes body bytes."""

    parsing: bool
    feeding: bool
    incoming: Exchange | None
    buffered: int

    def restart(self) -> None: ...

    def feed(self, data: bytes) -> None: ...

    def failed(self) -> Exchange | None: ...

    def drop_buffered(self, ex: Exchange) -> None: ...


class Host(Protocol):
    """What the parts may use of their connection."""

    factory: Engine
    clock: Clock
    identity: Any  # proxy.listener.identity.ConnectionIdentity once the handshake is done
    conn: ConnContext | None
    gone: bool
    closing: bool
    active: Exchange | None

    @property
    def flow(self) -> FlowControl: ...

    @property
    def forward(self) -> Forwarding: ...

    @property
    def local(self) -> LocalAnswering: ...

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def error_now(self, status: int, why: str = "") -> None: ...

    def fail_active(self, status: int) -> None: ...

    def abort_exchange(self) -> None: ...

    def finish(self, close: bool) -> None: ...

    def close(self) -> None: ...

    def age_exceeded(self) -> bool: ...

    def drop_buffered(self, ex: Exchange) -> None: ...

    def decide_failed(self, failure: Failure, ex: Exchange) -> None: ...

    def wait_for(self, ex: Exchange, d: Deferred[Any], event: int,
                 then: "Callable[[Any, Exchange], None]") -> None: ...

    def become_tunnel(self, tunnel: Tunnel) -> None: ...

    def tunnel_open(self) -> None: ...

    def deadline(self, kind: int) -> None: ...

    # for the reader
    def admit(self, ex: Exchange) -> None: ...

    def parse_failed(self, status: int) -> None: ...

    def upgraded(self, rest: bytes) -> None: ...

    def last_closes(self) -> bool: ...
