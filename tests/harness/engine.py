"""A deterministic harness for proxy.http.connection: StringTransports, a MemoryReactorClock, a fake gate.

The client connection and every upstream connection are ``StringTransport``s; the real
``UpstreamPools``/``Pool`` connect through ``MemoryReactorClock.connectTCP`` and the test
completes (or fails) each connection by hand. Time moves only with ``reactor.advance``.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from proxy.gate.policy import ForwardPolicy
from proxy.sessions.injection import PresenceRewrites
from proxy.http.connection import GatewayProtocol
from proxy.listener.identity import ConnectionIdentity
from proxy.http.messages import Forward
from proxy.http.tunnel import TunnelRegistry
from proxy.http.upstream import UpstreamConnection, UpstreamPools
from tests.harness.config import engine_config
from tests.harness.plain_gateway import PlainGatewayFactory


class Transport(StringTransport):
    """A StringTransport that reports connectionLost on close/abort and counts pauses."""

    def __init__(self, peer: tuple[str, int] = ("10.0.0.7", 40000)) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", *peer))
        self.protocol: Any = None
        self.aborted = False
        self.lost = False

    def loseConnection(self) -> None:
        super().loseConnection()
        self._lose()

    def abortConnection(self) -> None:
        self.aborted = True
        self._lose()

    def _lose(self) -> None:
        if not self.lost and self.protocol is not None:
            self.lost = True
            from twisted.internet.error import ConnectionDone

            self.protocol.connectionLost(Failure(ConnectionDone()))

    def take(self) -> bytes:
        v = self.value()
        self.clear()
        return v


class Gate:
    """Records every head it sees; ``decide`` returns ``self.next(head)`` (default: Forward).

    Like the real gate, every Forward leaves with its policy set (``proxy.gate.policy``).
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.policy = ForwardPolicy(config, PresenceRewrites(config.sessions))
        self.heads: list[Any] = []
        self.next: Callable[[Any], Any] = lambda head: Forward(config.default_route, account="alice",
                                                               session_id="sess-1")

    def decide(self, head: Any, conn: Any) -> Any:
        self.heads.append(head)
        d = self.next(head)
        if isinstance(d, Forward):
            return self.policy.apply(d, head)
        if isinstance(d, Deferred):
            return d.addCallback(self.policy.settle, head)
        return d


def identity(transport: Any, now: float) -> ConnectionIdentity:
    peer = transport.getPeer()
    return ConnectionIdentity(presented=False, verdict=None, account="alice", mapping_error=None,
                              handshake_at=now, full_handshake=True, protocol="", cipher="",
                              client_ip=peer.host, client_port=peer.port)


class Harness:
    """One client connection to a GatewayProtocol with a controllable upstream."""

    def __init__(self, overrides: dict[str, dict[str, Any]] | None = None,
                 identify: Callable[[Any, float], Any] = identity) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_000_000)
        self.config = engine_config("http://upstream.test:8080", overrides)
        self.gate = Gate(self.config)
        self.tunnels = TunnelRegistry()
        self.pools = UpstreamPools(self.config.routes, self.reactor, self.reactor)
        self.factory = PlainGatewayFactory(gate=self.gate, identify=identify, config=self.config, pools=self.pools,
                                           clock=self.reactor, tunnels=self.tunnels)
        self.client = Transport()
        self.proto: GatewayProtocol = self.factory.buildProtocol(None)
        self.client.protocol = self.proto
        self.proto.makeConnection(self.client)
        #: one per upstream connect, in order: (None, None) for a connect that failed
        self.upstreams: list[tuple[UpstreamConnection | None, Transport | None]] = []

    # client side
    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def out(self) -> bytes:
        return self.client.take()

    # upstream side
    @property
    def pending_connects(self) -> int:
        return len(self.reactor.tcpClients) - len(self.upstreams)

    def connect_upstream(self) -> tuple[UpstreamConnection, Transport]:
        """Complete the oldest pending upstream connect; returns the connection and its transport."""
        host, port, factory, timeout, _ = self.reactor.tcpClients[len(self.upstreams)]
        conn = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert isinstance(conn, UpstreamConnection)
        t = Transport(("127.0.0.1", port))
        t.protocol = conn
        self.upstreams.append((conn, t))
        conn.makeConnection(t)
        return conn, t

    def fail_connect(self, reason: Exception) -> None:
        host, port, factory, timeout, _ = self.reactor.tcpClients[len(self.upstreams)]
        connector = self.reactor.connectors[len(self.upstreams)]
        self.upstreams.append((None, None))  # keeps upstreams in step with the reactor's connects
        factory.clientConnectionFailed(connector, Failure(reason))

    def respond(self, conn: UpstreamConnection, data: bytes) -> None:
        conn.dataReceived(data)

    def upstream_received(self) -> bytes:
        return b"".join(t.value() for c, t in self.upstreams if t is not None)
