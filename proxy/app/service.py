"""Wiring: build the whole gateway from a :class:`~proxy.config.Config`.

``make_service(config)`` returns a ``MultiService`` for twistd (and ``certgate run``):
the TLS listener, reload triggers (SIGHUP, file watch, ``certgate trust`` edits), the
session machinery, the admin listener and extra worker processes. Nothing here decides
anything; it only connects the parts.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from proxy.config import Config
from proxy.version import certgate_version
from trust.problems import Problem

if TYPE_CHECKING:  # pragma: no cover
    from proxy.interfaces import (AuditSink, Endpoint, FrontDoor, MetricsRegistry, RequestGate, Sessions,
                                  SessionStore)
    from proxy.listener.reload import TrustState
    from proxy.stores.interface import SessionRecord

log = Logger(namespace="certgate")


def preflight(cfg: Config, *, bind: bool = True) -> list[Problem]:
    """Every problem that stops the gateway from starting (:func:`proxy.app.checks.startup_problems`).

    ``certgate check-config`` and the service call this same function; empty means it can start.
    """
    from proxy.app.checks import startup_problems

    return startup_problems(cfg, bind=bind)


class _Listener(Service):
    """Listen on the configured address; stopping stops accepting (existing connections stay)."""

    def __init__(self, reactor: Any, address: str, port: int, factory: Any, reuse_port: bool,
                 name: str = "listener", creator: Any = None) -> None:
        self._reactor, self._address, self._port = reactor, address, port
        self._factory, self._reuse_port = factory, reuse_port
        self._creator = creator  # set: TLS on the socket itself (proxy.listener.transport) for factory
        self.port: IListeningPort | None = None
        self.setName(name)

    def startService(self) -> None:
        from twisted.internet.tcp import makeBinding

        super().startService()
        binding = makeBinding(self._address, self._port, reuseAddress=True, reusePort=self._reuse_port)
        try:
            if self._creator is not None:
                from proxy.listener.transport import listen_tls

                self.port = listen_tls(self._reactor, binding, self._factory, self._creator, backlog=1024)
            else:
                self.port = self._reactor.listenTCP(binding, self._factory, backlog=1024)
        except CannotListenError as e:  # taken after the start checks: one line, status 2
            sys.stderr.write(f"certgate: [listen] port: {self._address}:{self._port} cannot be bound: "
                             f"{e.socketError}\n")
            raise SystemExit(2) from None
        host, port = _host_port(self.port)
        log.info("certgate listening on {host}:{port}", host=host, port=port)

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        if self.port is None:
            return None
        try:
            stopped = self.port.stopListening()
        except Exception:
            return defer.fail()
        return stopped if stopped is not None else defer.succeed(None)


def _host_port(port: IListeningPort) -> tuple[str, int]:
    """The address a listening TCP port is bound to."""
    addr = port.getHost()
    if isinstance(addr, (IPv4Address, IPv6Address)):
        return addr.host, addr.port
    return str(addr), 0


class _WorkerProtocol(ProcessProtocol):
    """A worker's process protocol: when it ends, its live gauges leave the shared metrics."""

    pid: int | None = None

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        self.pid = getattr(self.transport, "pid", None)

    def processEnded(self, reason: Any) -> None:  # noqa: N802 (Twisted's name)
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if folder and self.pid:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(self.pid, folder)


class _Workers(Service):
    """Extra worker processes (``[listen] workers``), each binding the port with SO_REUSEPORT."""

    def __init__(self, reactor: Any, config_path: Path, count: int) -> None:
        self._reactor, self._path, self._count = reactor, config_path, count
        self._procs: list[Any] = []

    def startService(self) -> None:
        super().startService()
        env = dict(os.environ, CERTGATE_WORKER="1")
        for i in range(self._count):
            env["CERTGATE_WORKER_INDEX"] = str(i + 1)
            argv = [sys.executable, "-m", "proxy.app.cli", "run", "--config", str(self._path)]
            proc = self._reactor.spawnProcess(_WorkerProtocol(), sys.executable, argv, env=env,
                                              childFDs={0: "w", 1: 1, 2: 2})
            self._procs.append(proc)
            log.info("started worker {index} (pid {pid})", index=i + 1, pid=proc.pid)

    def signal_all(self, sig: str) -> None:
        """Send ``sig`` (e.g. "HUP", "TERM") to every live worker."""
        for proc in self._procs:
            try:
                proc.signalProcess(sig)
            except Exception:  # already gone
                pass

    def stopService(self) -> None:
        super().stopService()
        self.signal_all("TERM")


class Gateway(MultiService):
    """The running gateway; attributes give tests and the admin API access to the parts."""

    parts: dict[str, Any]

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.parts = {}
        self._shutdown_deadline = 10.0

    def stopService(self) -> defer.Deferred[None]:
        """Stop accepting, close WebSockets with 1001, let in-flight requests finish (bounded)."""
        if os.environ.get("CERTGATE_WORKER") != "1":
            from proxy.app.sdnotify import notify

            notify("STOPPING=1")
        watchdog = self.parts.get("watchdog")
        if watchdog is not None and watchdog.running:
            watchdog.stop()
        d = defer.maybeDeferred(super().stopService)
        tunnels = self.parts.get("tunnels")
        if tunnels is not None:
            tunnels.close_all(1001, "going away")
        factory = self.parts.get("http")

        def drain(_: object) -> defer.Deferred[None] | None:
            if factory is None or not hasattr(factory, "drain"):
                return None
            return factory.drain(self._shutdown_deadline)

        d.addCallback(drain)
        sessions = self.parts.get("sessions")
        store = self.parts.get("store")

        directory = self.parts.get("directory")

        def close(r: object) -> object:
            from proxy.observe.logfiles import flush_all

            if directory is not None:
                directory.stop()
            if sessions is not None:
                sessions.stop()
            if store is not None:
                store.close()
            flush_all()  # access lines of the requests finished while draining
            return r

        d.addBoth(close)
        return d

    def startService(self) -> None:
        log.info("certgate {version} starting: pid {pid}, reactor {reactor}", version=certgate_version(),
                 pid=os.getpid(), reactor=type(self.reactor).__name__)
        sessions = self.parts.get("sessions")
        if sessions is not None:
            d = sessions.start()  # ends sessions that died while the gateway was down, arms timers
            d.addErrback(lambda f: log.warn("session store unavailable at start ({err}); sessions are checked "
                                            "on use", err=f.getErrorMessage()))
        directory = self.parts.get("directory")
        if directory is not None:
            directory.start()
        super().startService()
        if os.environ.get("CERTGATE_WORKER") != "1":
            self._tell_systemd()

    def _tell_systemd(self) -> None:
        """READY=1 now that the listeners are bound (Type=notify); WATCHDOG=1 pings if asked for."""
        from proxy.app.sdnotify import notify, watchdog_interval

        addrs = ["%s:%d" % _host_port(p.port) for p in self if isinstance(p, _Listener) and p.port is not None]
        notify(f"READY=1\nSTATUS=listening on {', '.join(addrs)}\nMAINPID={os.getpid()}")
        interval = watchdog_interval()
        if interval:
            from twisted.internet.task import LoopingCall

            loop = LoopingCall(notify, "WATCHDOG=1")
            loop.clock = self.reactor
            loop.start(interval, now=True)
            self.parts["watchdog"] = loop


def make_service(cfg: Config, reactor: Any = None) -> Gateway:
    """Build the gateway service from ``cfg`` (the global reactor unless one is given)."""
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    from proxy.observe.audit import Audit
    from proxy.gate.decide import Gate, retry_after_for
    from proxy.http.factory import GatewayFactory
    from proxy.listener.reload import TrustState
    from proxy.sessions.manager import SessionManager
    from proxy.sessions.injection import PresenceRewrites
    from proxy.sessions.presence import session_endpoints
    from proxy.stores import open_store, options_from
    from proxy.listener.tls import LiveServerTLS, identify, revalidate
    from proxy.http.tunnel import TunnelRegistry
    from proxy.http.upstream import UpstreamPools

    gw = Gateway(cfg, reactor)
    is_worker = os.environ.get("CERTGATE_WORKER") == "1"
    from proxy.observe.accesslog import RequestLog
    from proxy.observe.logfiles import open_log
    from proxy.app.observing import OpsService, make_metrics, register_gauges

    metrics = make_metrics(cfg, is_worker)
    audit = Audit.open(cfg.audit.file, now=reactor.seconds)
    from proxy.listener.verify import HandshakeVerifier
    from proxy.observe.audit import RefusalDigest

    refusals = RefusalDigest(audit, reactor)
    HandshakeVerifier.refusal_sink = refusals.add
    ocsp = None
    if cfg.trust.ocsp.enabled:
        from proxy.listener.ocsp import AgentFetcher, OcspChecker

        ocsp = OcspChecker(cfg.trust.ocsp, reactor, AgentFetcher(reactor), metrics=metrics, audit=audit)
    directory = None
    if cfg.trust.mapping.rule == "ldap":
        from proxy.listener.directory import DirectoryMapper

        directory = DirectoryMapper(cfg.ldap, clock=reactor, reactor=reactor, metrics=metrics)
    trust_state = TrustState(cfg, reactor, ocsp=ocsp, directory=directory)
    creator = LiveServerTLS(trust_state, cfg)
    store = open_store(cfg.sessions.store, cfg.base_dir, options_from(cfg.sessions, cfg.base_dir), reactor=reactor)
    store.monitor.use_metrics(metrics)
    tunnels = TunnelRegistry()
    sessions = SessionManager(store, reactor, cfg.sessions, tunnels, audit)
    endpoints, front_doors = _login_parts(cfg, store, sessions, reactor, audit, metrics)
    # certgate's own endpoints; the login's win a clash
    endpoints = {**session_endpoints(sessions, retry_after=retry_after_for(cfg.sessions)), **endpoints}
    gate: RequestGate = Gate(config=cfg, sessions=sessions, clock=reactor, audit=audit, endpoints=endpoints,
                             front_doors=front_doors, metrics=metrics, rewrites=PresenceRewrites(cfg.sessions))
    pools = UpstreamPools(cfg.routes, reactor, reactor)
    pools.use_metrics(metrics)
    http = GatewayFactory(gate=gate, identify=identify, config=cfg, pools=pools, clock=reactor,
                          tunnels=tunnels, metrics=metrics)
    access = open_log(cfg.log.access_file, buffered=True) if cfg.log.access_file else None
    http.request_done = RequestLog(metrics=metrics, clock=reactor, stream=access)
    from proxy.listener.failures import HandshakeFailures

    http.handshake_failed = HandshakeFailures(metrics, refusals)
    metrics.gauge("websocket_tunnels", "Open WebSocket tunnels", (), lambda: [((), float(tunnels.count()))])
    if not is_worker:
        register_gauges(metrics, trust_state, reactor, sessions)
    gw.parts.update(trust=trust_state, tls=creator, store=store, tunnels=tunnels, sessions=sessions, gate=gate,
                    pools=pools, http=http, metrics=metrics, audit=audit, ocsp=ocsp, directory=directory)

    def after_reload(old: Any, new: Any) -> None:
        now = reactor.seconds()
        closed = revalidate(list(http.connections), trust_state, now)
        d = sessions.revalidate(lambda rec: _still_valid(trust_state, rec, now), "trust-store-changed")

        def done(ended: int) -> None:
            if closed or ended:
                log.info("trust reload closed {closed} connection(s) and ended {ended} session(s)",
                         closed=closed, ended=ended)

        def failed(f: Any) -> None:
            log.error("trust reload closed {closed} connection(s); sessions not revalidated (store: {err}); the "
                      "next reload tries again", closed=closed, err=f.getErrorMessage())
        d.addCallbacks(done, failed)

    trust_state.add_listener(after_reload)
    _log_ticket_check(trust_state.current.identity)
    _Listener(reactor, cfg.listen.address, cfg.listen.port, http, reuse_port=cfg.listen.workers > 1,
              creator=creator).setServiceParent(gw)
    if cfg.trust.reload_interval > 0:
        TimerService(cfg.trust.reload_interval, trust_state.maybe_reload).setServiceParent(gw)
    if cfg.admin.port and not is_worker:
        from proxy.ops.admin import admin_service

        admin_service(cfg, gw, reactor).setServiceParent(gw)
    if cfg.listen.workers > 1 and not is_worker:
        w = _Workers(reactor, cfg.path, cfg.listen.workers - 1)
        w.setName("workers")
        w.setServiceParent(gw)

    workers = gw.getServiceNamed("workers") if cfg.listen.workers > 1 and not is_worker else None
    from proxy.app.observing import ExpiryWarner

    expiry = None if is_worker else ExpiryWarner(trust_state, reactor, cfg.trust.expiry_warning_days)
    OpsService(reactor, metrics, workers, refusals, expiry).setServiceParent(gw)

    def on_sighup(signum: int, frame: object) -> None:
        reactor.callFromThread(trust_state.reload, "SIGHUP")
        if workers is not None:
            reactor.callFromThread(workers.signal_all, "HUP")

    if hasattr(signal, "SIGHUP") and reactor is not None and _is_main_thread():
        signal.signal(signal.SIGHUP, on_sighup)
    if cfg.routes and any(r.tls and r.tls.unsafe_skip_verify for r in cfg.routes):
        log.warn("UNSAFE: upstream TLS verification is off for route(s) {names}",
                 names=", ".join(r.name for r in cfg.routes if r.tls and r.tls.unsafe_skip_verify))
    if any(r.unsafe_forward_raw_target for r in cfg.routes):
        log.warn("UNSAFE: route(s) {names} forward the raw request target, not the canonical path certgate "
                 "decided on", names=", ".join(r.name for r in cfg.routes if r.unsafe_forward_raw_target))
    return gw


def _log_ticket_check(identity: Any) -> None:
    """Measure and log the TLS 1.3 session tickets this process sends (one in-memory handshake)."""
    from proxy.listener.openssl_conf import tickets_per_handshake
    from proxy.listener.context import build_context

    ctx = build_context(identity.default, client_auth="none", client_cas=(), min_version="1.3",
                        verify_callback=None, session_id=b"certgate-ticket-check")
    n = tickets_per_handshake(ctx)
    conf = os.environ.get("OPENSSL_CONF", "")
    if n:
        log.warn("TLS 1.3 handshakes send {n} session ticket(s): the OpenSSL configuration {conf!r} does not set "
                 "NumTickets = 0 (see docs/tls.md)", n=n, conf=conf)
    else:
        log.info("TLS 1.3 session tickets per handshake: 0")


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _still_valid(trust_state: TrustState, rec: SessionRecord, now: float) -> bool:
    """True when a session's certificate still verifies and maps under the current trust state."""
    return bool(trust_state.still_valid(rec.cert_der, rec.chain_der, now))


def _login_parts(cfg: Config, store: SessionStore, sessions: Sessions, reactor: Any, audit: AuditSink,
                 metrics: MetricsRegistry | None = None) -> tuple[dict[str, Endpoint], list[FrontDoor]]:
    """Login endpoints and the front doors the configured routes ask for."""
    from proxy.login.endpoints import login_endpoints
    from proxy.login.service import LoginService

    from twisted.internet.threads import deferToThreadPool

    def in_thread(f: Callable[..., Any], *a: Any) -> defer.Deferred[Any]:  # scrypt and file writes: off the reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *a)

    login = LoginService(config=cfg, store=store, sessions=sessions, clock=reactor, audit=audit,
                         defer_to_thread=in_thread)
    if metrics is not None:
        login.use_metrics(metrics)
    endpoints = dict(login_endpoints(login))
    doors: list[FrontDoor] = []
    kinds = {r.kind for r in cfg.routes}
    if "cockpit" in kinds:
        from proxy.frontdoors.cockpit import CockpitFrontDoor

        doors.append(CockpitFrontDoor(config=cfg, login=login, sessions=sessions, store=store, clock=reactor,
                                      audit=audit))
    if "joc" in kinds:
        from proxy.frontdoors.joc import JocFrontDoor

        doors.append(JocFrontDoor(config=cfg, login=login, sessions=sessions, clock=reactor, audit=audit))
    return endpoints, doors
