"""The per-worker side of the HTTP engine: :class:`GatewayFactory` builds one connection per client.

The factory reads every setting the engine uses once from the configuration, owns the set of
live connections (trust reloads and draining walk it), the request counters, the connection
metrics and the two hooks the service installs (``request_done``, ``handshake_failed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory

from proxy.http.connection import GatewayProtocol
from proxy.http.headers import HeaderPolicy
from proxy.http.parts import HandshakeFailed, RequestDone
from proxy.timerwheel import TimerWheel

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock
    from proxy.config import Config
    from proxy.http.messages import RequestGate
    from proxy.http.parts import Connection
    from proxy.http.tunnel import TunnelRegistry
    from proxy.http.upstream import UpstreamPools
    from proxy.observe.seams import MetricChild


class _Noop:
    """Metrics off: every observation is dropped."""

    def inc(self, amount: float = 1.0) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


_NOOP = _Noop()

class GatewayFactory(Factory):
    """Builds :class:`GatewayProtocol`; holds the per-worker settings read once from ``config``
    (it is the connections' :class:`proxy.http.parts.Engine`).

    ``connections`` is the set of live protocols (each has ``identity`` and ``abort()``).
    ``counters`` counts requests, errors and upstream failures (read by the metrics endpoint).
    """

    protocol = GatewayProtocol
    noisy = False
    fast_writes = True  # see proxy.http.fastwrite; False restores Twisted's stock write path

    def __init__(self, *, gate: "RequestGate", identify: Callable[[Any, float], Any], config: "Config",
                 pools: "UpstreamPools", clock: "Clock", tunnels: "TunnelRegistry", metrics: Any = None) -> None:
        self.gate = gate
        self.identify = identify
        self.config = config
        self.pools = pools
        self.clock = clock
        #: every connection's deadline (handshake, header, idle, body, upstream) in one timer
        self.wheel = TimerWheel(clock)
        self.tunnels = tunnels
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.draining = False
        self._drain_waiters: list[Deferred[None]] = []
        self.counters: dict[str, int] = {"connections": 0, "refused": 0, "requests": 0, "errors": 0,
                                         "upstream_errors": 0, "tunnels": 0}
        self.request_done: RequestDone | None = None
        self.handshake_failed: HandshakeFailed | None = None
        self.m_accepted: MetricChild = _NOOP
        self.m_refused: MetricChild = _NOOP
        self.m_handshake: MetricChild = _NOOP
        self.m_upstream_errors: MetricChild = _NOOP
        self.m_tunnels: MetricChild = _NOOP
        listen, limits, ws = config.listen, config.limits, config.websocket
        self.max_connections = int(listen.max_connections)
        self.handshake_timeout = float(listen.handshake_timeout)
        self.header_timeout = float(listen.header_timeout)
        self.idle_timeout = float(listen.idle_timeout)
        interval = float(config.sessions.presence_interval or 30.0)
        age = float(listen.max_connection_age)
        # Connections live at most presence_interval after their handshake (see GatewayProtocol._arm_idle).
        self.max_connection_age = min(age, interval) if age else interval
        self.max_request_line = int(limits.max_request_line)
        self.max_header_size = int(limits.max_header_size)
        self.max_head = self.max_request_line + self.max_header_size
        self.max_headers = int(limits.max_headers)
        self.max_body_unauth = int(limits.max_body_unauthenticated)  # a discarded body after a local answer
        self.max_body = int(limits.max_body)  # caps Local.max_body (0: no cap)
        self.max_pipeline = int(limits.max_pipeline)
        self.ws_origins = frozenset(o.encode("latin-1") for o in ws.origins)
        self.ws_idle_timeout = float(ws.idle_timeout)
        self.header_policy = HeaderPolicy.from_config(config.headers)
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
            self.drained()
        else:
            call = self.clock.callLater(timeout, self._drain_expired)

            def stop_timer(result: None) -> None:
                if call.active():
                    call.cancel()
                return result
            d.addBoth(stop_timer)
        return d

    def _drain_expired(self) -> None:
        for p in list(self.connections):
            p.abort()
        self.drained()

    def drained(self) -> None:
        """No connection is left (or the drain timed out): fire the drain waiters."""
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    def buildProtocol(self, addr: Any) -> GatewayProtocol:
        return GatewayProtocol(self)
