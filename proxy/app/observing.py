"""Operational wiring: metrics registry set-up, expiry gauges, access log, log reopening (SIGUSR1).

Called by :func:`proxy.app.service.make_service`; nothing here decides about requests.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.logger import Logger

from proxy.version import certgate_version

if TYPE_CHECKING:  # pragma: no cover
    from proxy.observe.audit import RefusalDigest
    from twisted.internet.defer import Deferred
    from proxy.observe.metrics import Metrics
    from proxy.config import Config
    from proxy.clock import Clock
    from proxy.interfaces import Sessions
    from proxy.observe.seams import MetricsRegistry
    from proxy.listener.reload import TrustState

log = Logger(namespace="certgate")


def make_metrics(cfg: Config, is_worker: bool) -> Metrics:
    """The process's :class:`~proxy.observe.metrics.Metrics`; the primary of several workers shares files."""
    from proxy.observe.metrics import Metrics, enable_multiprocess, multiprocess_dir

    if cfg.listen.workers > 1 and not is_worker and not multiprocess_dir():
        folder = tempfile.mkdtemp(prefix="certgate-metrics-", dir=os.environ.get("RUNTIME_DIRECTORY") or None)
        enable_multiprocess(folder)
    m = Metrics()
    if not is_worker:
        m.add_process_metrics(certgate_version())
    return m


def expiry_series(trust_state: TrustState, now: float) -> list[tuple[tuple[str, str, str], float]]:
    """(kind, file, fingerprint) -> seconds until expiry (CRL: until nextUpdate; server: leaf notAfter)."""
    out: list[tuple[tuple[str, str, str], float]] = []
    snap = trust_state.current
    for e in snap.generation.entries:
        if e.not_after is not None:
            out.append(((e.kind.lower(), e.file, e.fingerprint), e.not_after.timestamp() - now))
    ident = snap.identity
    certs = [("server", ident.default)] + [("server", sc) for sc in ident.sni.values()]
    seen = set()
    for kind, sc in certs:
        leaf = sc.leaf
        from cryptography.hazmat.primitives import hashes

        fp = leaf.fingerprint(hashes.SHA256()).hex()
        if fp in seen:
            continue
        seen.add(fp)
        out.append(((kind, str(sc.cert_path), fp), leaf.not_valid_after_utc.timestamp() - now))
    return out


def live_sessions(sessions: Sessions, now: float) -> Deferred[float]:
    """Sessions in the store that are neither ended nor past their end (one store listing):
    a Deferred firing with the count (the store is asynchronous)."""
    def count(recs: Any) -> float:
        return float(sum(1 for rec in recs if rec.ended is None and sessions.ends_at(rec)[0] > now))
    return sessions.store.list().addCallback(count)


class LiveSessionsGauge:
    """The ``sessions_live`` gauge callback: answers the last count at once and starts a new
    store listing if none is running (a scrape never waits for the store; a failed listing
    keeps the last count)."""

    def __init__(self, sessions: Sessions, clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock
        self.value = 0.0
        self._busy = False

    def __call__(self) -> list[tuple[tuple[()], float]]:
        if not self._busy:
            self._busy = True

            def got(v: float) -> None:
                self.value = v

            def done(_: Any) -> None:
                self._busy = False
            live_sessions(self.sessions, self.clock.seconds()).addCallbacks(got, lambda f: None).addBoth(done)
        return [((), self.value)]


def register_gauges(metrics: MetricsRegistry, trust_state: TrustState, clock: Clock,
                    sessions: Sessions | None = None) -> None:
    """Expiry and live-session gauges (the same for every process; read in the admin process)."""
    if sessions is not None:
        metrics.gauge("sessions_live", "Trusted sessions live in the session store", (),
                      LiveSessionsGauge(sessions, clock), shared=True)
    metrics.gauge("certificate_expiry_seconds",
                  "Seconds until a trusted CA, pinned certificate or server certificate expires, or a CRL's "
                  "nextUpdate (negative: past)", ("kind", "file", "fingerprint"),
                  lambda: expiry_series(trust_state, clock.seconds()), shared=True)


def expiry_lines(snapshot: Any, now: float, warn_days: int) -> list[str]:
    """Warnings for the trust store's entries (CA, pinned, CRL nextUpdate) and the server certificates.

    Trust entries use ``trust.store.expiry_warnings`` (the same lines ``certgate trust list``
    shows); a server certificate warns within ``warn_days`` of notAfter.
    """
    import datetime as dt

    from trust.store import expiry_warnings

    when = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    out = expiry_warnings(snapshot.generation, when, warn_days)
    ident = snapshot.identity
    for sc in dict.fromkeys((ident.default, *ident.sni.values())):
        left = sc.leaf.not_valid_after_utc - when
        if dt.timedelta(0) <= left <= dt.timedelta(days=warn_days):
            days = int(left.total_seconds() // 86400)
            out.append(f"{sc.cert_path} (server certificate): expires in {days} day{'s' if days != 1 else ''}")
    return out


class ExpiryWarner:
    """Logs :func:`expiry_lines` at start, after every trust reload and once a day."""

    def __init__(self, trust_state: TrustState, clock: Clock, warn_days: int, logger: Any = None) -> None:
        self.trust_state, self.clock, self.warn_days = trust_state, clock, warn_days
        self.log = logger or log
        self._loop: Any = None
        trust_state.add_listener(self._reloaded)

    def _reloaded(self, old: Any, new: Any) -> None:
        self.check("reload")

    def check(self, when: str) -> list[str]:
        lines = expiry_lines(self.trust_state.current, self.clock.seconds(), self.warn_days)
        for line in lines:
            self.log.warn("expiry ({when}): {line}", when=when, line=line)
        return lines

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        self.check("start")
        self._loop = LoopingCall(self.check, "daily")
        self._loop.clock = self.clock
        self._loop.start(86400.0, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()


class OpsService(Service):
    """Flushes the access log every second, refreshes shared gauges, reopens log files on SIGUSR1."""

    name = "ops"

    def __init__(self, reactor: Any, metrics: Metrics, workers: Any = None, refusals: RefusalDigest | None = None,
                 expiry: ExpiryWarner | None = None) -> None:
        self.reactor, self.metrics, self.workers, self.refusals = reactor, metrics, workers, refusals
        self.expiry = expiry
        self._loop: Any = None
        self._owned_dir: str | None = None

    def tick(self) -> None:
        from proxy.observe.logfiles import flush_all

        flush_all()
        if self.metrics.multiprocess:
            self.metrics.refresh()

    def reopen(self) -> None:
        """Reopen every log file (after logrotate renamed them); the workers get SIGUSR1 too."""
        from proxy.observe.logfiles import flush_all, reopen_all

        flush_all()
        errors = reopen_all()
        for e in errors:
            log.error("SIGUSR1: cannot reopen {err}; still writing to the old file", err=e)
        log.info("SIGUSR1: log files reopened")
        if self.workers is not None:
            self.workers.signal_all("USR1")

    def startService(self) -> None:
        from twisted.internet.task import LoopingCall

        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(1.0, now=False)
        if self.refusals is not None:
            self.refusals.start()
        if self.expiry is not None:
            self.expiry.start()
        if os.environ.get("CERTGATE_WORKER") != "1" and self.metrics.multiprocess:
            self._owned_dir = self.metrics.multiprocess
        if hasattr(signal, "SIGUSR1"):
            import threading

            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGUSR1, lambda s, f: self.reactor.callFromThread(self.reopen))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.refusals is not None:
            self.refusals.stop()
        if self.expiry is not None:
            self.expiry.stop()
        self.tick()
        if self._owned_dir:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
