"""The declared seams inside the HTTP engine: what a connection's parts offer and what they may use.

A :class:`proxy.http.connection.GatewayProtocol` holds four parts, each behind a small
interface here: the request reader (:class:`Reading`, :mod:`proxy.http.reader`), flow control
and deadlines (:class:`FlowControl`, :mod:`proxy.http.flow`),
forwarding (:class:`Forwarding`, :mod:`proxy.http.forward`; it is also the upstream pool's
``Requester``) and local answers (:class:`LocalAnswering`, :mod:`proxy.http.local`). The parts
reach their connection only through :class:`Host`. Nothing here does anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from proxy.http.exchange import Exchange
    from proxy.http.factory import GatewayFactory
    from proxy.http.messages import ConnContext, Forward, Local, Response
    from proxy.http.tunnel import WebSocketTunnel
    from proxy.http.upstream import UpstreamConnection


class DelayedCall(Protocol):
    """What the engine uses of ``IDelayedCall``."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...

    def reset(self, secondsLater: float) -> None: ...

    def getTime(self) -> float: ...


class Clock(Protocol):
    """What the engine uses of ``IReactorTime`` (a reactor, or ``twisted.internet.task.Clock``)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall: ...


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

    up: "UpstreamConnection | None"  # the upstream connection in use (also a tunnel's)

    def start(self, ex: "Exchange", fwd: "Forward") -> None: ...

    def go(self, ex: "Exchange", dechunk: bool) -> None: ...

    def body(self, ex: "Exchange", data: bytes) -> None: ...

    def body_sent(self, ex: "Exchange") -> None: ...

    def cancel(self) -> None: ...

    def client_lost(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class LocalAnswering(Protocol):
    """The local-answer part: ``Response`` and ``Local`` decisions."""

    def respond(self, ex: "Exchange", resp: "Response") -> None: ...

    def start(self, ex: "Exchange", local: "Local") -> None: ...

    def run(self, ex: "Exchange") -> None: ...


class Reading(Protocol):
    """The request reader: llhttp's target; it makes one exchange per head and routes body bytes."""

    parsing: bool
    feeding: bool
    incoming: "Exchange | None"
    buffered: int

    def restart(self) -> None: ...

    def feed(self, data: bytes) -> None: ...

    def failed(self) -> "Exchange | None": ...

    def drop_buffered(self, ex: "Exchange") -> None: ...


class Host(Protocol):
    """What the parts may use of their connection."""

    factory: "GatewayFactory"
    clock: Clock
    identity: Any  # proxy.listener.identity.ConnectionIdentity once the handshake is done
    conn: "ConnContext | None"
    gone: bool
    closing: bool
    active: "Exchange | None"

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

    def drop_buffered(self, ex: "Exchange") -> None: ...

    def decide_failed(self, failure: "Failure", ex: "Exchange") -> None: ...

    def wait_for(self, ex: "Exchange", d: "Deferred[Any]", event: int,
                 then: "Callable[[Any, Exchange], None]") -> None: ...

    def become_tunnel(self, tunnel: "WebSocketTunnel") -> None: ...

    def tunnel_open(self) -> None: ...

    def deadline(self, kind: int) -> None: ...

    # for the reader
    def admit(self, ex: "Exchange") -> None: ...

    def parse_failed(self, status: int) -> None: ...

    def upgraded(self, rest: bytes) -> None: ...

    def last_closes(self) -> bool: ...
