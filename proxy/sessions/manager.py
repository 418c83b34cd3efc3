"""Trusted sessions: bound to a certificate, alive only while that certificate keeps being proved.

Rules (``DESIGN.md`` "Trusted sessions"), all on the injected clock:

- a session is opened by a login on a connection that presented a valid certificate and is
  bound to its SHA-256 fingerprint; the cookie carries a fresh 256-bit random token at every
  login; the store keeps only ``sha256(token)`` as the session id, so listing sessions or
  reading the store never reveals a usable cookie;
- ``proved_at`` moves only when a request of the session arrives on a connection whose
  identity is a *full* handshake that presented the *same* certificate; it becomes that
  handshake's time (never later than now, never backwards);
- the session ends at the earliest of ``proved_at + grace`` (``long_until`` while a long
  trusted session is active), ``last_seen + idle_timeout``, ``created_at + max_lifetime`` and
  the bound certificate's notAfter (a CA removal or CRL revocation ends it at the next trust
  reload through :meth:`SessionManager.revalidate`);
- a request presenting a *different* certificate is refused and ends the session (AUTH-01);
- without a certificate (want mode, card pulled) requests pass only inside the window above;
- at the end, whatever the cause, the session's WebSockets are closed: one timer per session
  known to this process, armed at its end time and re-armed when the proof moves; the timer
  re-reads the store first (several gateways may share it). A periodic sweep (``sweep_interval``,
  5 s) closes the tunnels of sessions that vanished from the store (revoked by the CLI or
  another gateway), so a revocation elsewhere reaches WebSockets within that interval.

``last_seen`` is written at most once per :data:`TOUCH_EVERY` seconds unless the proof moves,
so the idle timeout is precise to that much and the store sees few writes.

Every method that reads or writes the store returns a Deferred (the store is asynchronous,
:class:`proxy.stores.interface.ISessionStore`); a store failure fails it with StoreError,
which callers turn into 503 ``session-store-unavailable``. ``[sessions] max_per_account``
limits live sessions per account atomically in the store (``refuse`` the new login, or
``replace`` the oldest, whose WebSockets are closed).
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterable, TypeVar, cast

from twisted.internet.defer import Deferred, inlineCallbacks, returnValue
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from proxy.interfaces import AuditSink, SessionCheck, SessionSettings
from proxy.sessions.rules import (cert_not_after, describe,  # noqa: F401 (re-exported)
                                  ends_at, fail as _fail, only_cookie as _only_cookie, remember_not_after,
                                  session_id_for)
from proxy.sessions.seams import Tunnels
from proxy.stores.interface import ISessionStore, LimitReached, SessionRecord

log = Logger()

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IReactorTime
    from twisted.python.failure import Failure

    from proxy.http.messages import Headers, RequestHead
    from proxy.listener.identity import ConnectionIdentity
    from proxy.clock import Clock, DelayedCall
    from proxy.interfaces import MetricsRegistry

_T = TypeVar("_T")
#: what an @inlineCallbacks method is: a generator of Deferreds returning its result
Flow = Generator["Deferred[Any]", Any, _T]

__all__ = ["SessionManager", "SessionCheck", "session_id_for", "ends_at", "cert_not_after", "describe",
           "TOUCH_EVERY", "SWEEP_INTERVAL", "WS_CLOSE_CODE"]

#: seconds between ``last_seen`` writes when nothing else changes
TOUCH_EVERY = 1.0
#: seconds between sweeps for sessions revoked elsewhere
SWEEP_INTERVAL = 5.0
#: WebSocket close code sent when a session ends (RFC 6455 policy violation)
WS_CLOSE_CODE = 1008
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


class SessionManager:
    """Opens, checks and ends trusted sessions on an injected clock.

    ``store`` implements ``ISessionStore``; ``settings`` is the ``[sessions]`` config section
    (``grace``, ``long_grace``, ``idle_timeout``, ``max_lifetime``, ``cookie_name``,
    ``presence_interval``); ``tunnels`` has ``close_session(session_id, code, reason)``;
    ``clock`` provides ``seconds()`` and ``callLater``; ``audit`` has ``record(...)``.
    """

    def __init__(self, store: ISessionStore, clock: Clock, settings: SessionSettings, tunnels: Tunnels,
                 audit: AuditSink, *, metrics: "MetricsRegistry | None" = None, sweep_interval: float = SWEEP_INTERVAL
                 ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.tunnels = tunnels
        self.audit = audit
        self.sweep_interval = sweep_interval
        self._cookie = settings.cookie_name
        self._timers: dict[str, "DelayedCall"] = {}
        self._sweeper: LoopingCall | None = None
        self._sweeps = 0
        self._revalidating = 0
        self._settle_waiters: list[Deferred[None]] = []
        self._m_opened: Any = None  # prometheus children (untyped library)
        self._m_ended: Any = None
        if metrics is not None:
            self.use_metrics(metrics)

    def use_metrics(self, metrics: "MetricsRegistry") -> None:
        """Count opened/ended sessions and report tracked ones in ``metrics`` (once; later calls are ignored)."""
        if self._m_opened is not None:
            return
        self._m_opened = metrics.counter("sessions_opened_total", "Trusted sessions opened").labels()
        self._m_ended = metrics.counter("sessions_ended_total", "Trusted sessions ended, by reason", ("reason",))
        metrics.gauge("sessions_tracked", "Live sessions with an end timer in this process", (),
                      lambda: [((), float(len(self._timers)))])

    # ------------------------------------------------------------------ lifecycle
    @inlineCallbacks
    def start(self) -> "Flow[None]":
        """End sessions that died while the gateway was down, then sweep every ``sweep_interval``.

        Optional: without it the sweep starts with the first session this process tracks, and
        dead sessions are ended by the first request that names them. A Deferred.
        """
        self._ensure_sweeping()
        now = self.clock.seconds()
        for rec in (yield self.store.list()):
            if rec.ended is None:
                at, why = self.ends_at(rec)
                if now >= at:
                    yield self._mark_ended(rec, why)

    def _ensure_sweeping(self) -> None:
        if self._sweeper is None or not self._sweeper.running:
            self._sweeper = LoopingCall(self.sweep)
            self._sweeper.clock = cast("IReactorTime", self.clock)  # zope interface: opaque to mypy
            self._sweeper.start(self.sweep_interval, now=False)

    def stop(self) -> None:
        """Stop the sweep and every timer (the store is left open)."""
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        for t in self._timers.values():
            if t.active():
                t.cancel()
        self._timers.clear()

    # ------------------------------------------------------------------ rules
    def ends_at(self, rec: SessionRecord) -> tuple[float, str]:
        """When ``rec`` ends if nothing changes, and the reason code of that end."""
        return ends_at(rec, self.settings)

    def fresh_window(self) -> float:
        """A proof is *fresh* when its full handshake happened at most this many seconds ago:
        ``presence_interval`` (default 30 s)."""
        return float(self.settings.presence_interval)

    # ------------------------------------------------------------------ cookies
    def _cookie_header(self, value: str) -> tuple[bytes, bytes]:
        return (b"Set-Cookie", f"{self._cookie}={value}; Path=/; Secure; HttpOnly; SameSite=Strict".encode("ascii"))

    def clear_cookie_headers(self) -> "Headers":
        """A Set-Cookie that removes the session cookie (the only cookie certgate sets with Max-Age)."""
        return [(b"Set-Cookie", f"{self._cookie}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
                 .encode("ascii"))]

    def session_id(self, head: "RequestHead") -> str | None:
        """The session id named by the request's cookie, or None (absent, repeated or malformed)."""
        token = _only_cookie(head, self._cookie)
        if token is None or not _TOKEN.match(token):
            return None
        return session_id_for(token)

    # ------------------------------------------------------------------ open
    def limit_for(self, account: str) -> tuple[int, bool]:
        """``(max live sessions, replace the oldest?)`` for ``account``: its ``[account:NAME]``
        ``max_sessions`` if set, else ``[sessions] max_per_account`` (0 = no limit)."""
        per = getattr(self.settings, "account_limits", None) or {}
        limit = int(per.get(account, getattr(self.settings, "max_per_account", 0)) or 0)
        return limit, getattr(self.settings, "on_limit", "refuse") == "replace"

    @inlineCallbacks
    def open(self, identity: "ConnectionIdentity", account: str, methods: Iterable[str], client_ip: str
             ) -> "Flow[tuple[SessionRecord, Headers]]":
        """Open a new session bound to ``identity``'s certificate: a Deferred firing with the
        record and its Set-Cookie header.

        Raises ValueError when the connection did not present a valid certificate (a session is
        never opened without one), :class:`LimitReached` when the account is at its limit
        (``refuse``). Does not check factors or the account: the login did.
        """
        if not identity.ok or not identity.presented:
            raise ValueError("a trusted session needs a valid client certificate on the login connection")
        now = self.clock.seconds()
        token = secrets.token_urlsafe(32)
        cert = identity.certificate
        cert_der, chain = (cert.der, cert.chain_der) if cert is not None else (b"", ())
        if cert is not None:
            remember_not_after(cert)  # the session's end reads it, never parses it
        rec = SessionRecord(id=session_id_for(token), account=account, fingerprint=identity.fingerprint or "",
                            cert_der=cert_der, chain_der=chain, created_at=now,
                            proved_at=min(identity.handshake_at, now), last_seen=now, long_until=0.0,
                            methods=tuple(methods), client_ip=client_ip, ended=None)
        limit, replace = self.limit_for(account)
        try:
            replaced = yield self.store.create(rec, limit=limit, replace=replace)
        except LimitReached as e:
            self.audit.record("session", "refuse", "session-limit", account=account, fingerprint=rec.fingerprint,
                              client_ip=client_ip, live=e.live, limit=limit)
            raise
        for old in replaced:
            self.audit.record("session", "end", "replaced-by-newer-login", account=account, session=old[:16],
                              limit=limit)
            if self._m_ended is not None:
                self._m_ended.labels("replaced-by-newer-login").inc()
            self._forget(old, close_reason="replaced-by-newer-login", force=True)
        self._arm(rec)
        self.audit.record("session", "open", "login", account=account, fingerprint=rec.fingerprint,
                          client_ip=client_ip, session=rec.id[:16], methods=list(rec.methods))
        if self._m_opened is not None:
            self._m_opened.inc()
        returnValue((rec, [self._cookie_header(token)]))

    # ------------------------------------------------------------------ check
    @inlineCallbacks
    def check(self, session_id: str, identity: "ConnectionIdentity", client_ip: str, *,
              activity: bool = True) -> "Flow[SessionCheck]":
        """Is the session alive for a request on a connection with ``identity``? Refresh its proof.

        Ends the session (and says why) when its time is up or the connection presents another
        certificate. ``activity=False`` (a presence ping from a hidden page) refreshes the proof
        but does not count as use for the idle timeout. A Deferred firing with a SessionCheck.
        """
        if self._revalidating:  # a trust reload is ending sessions: decide after it (never on a revoked one)
            yield self._settled()
        now = self.clock.seconds()
        rec = yield self.store.get(session_id)
        if rec is None:
            self._forget(session_id)
            return _fail("session-unknown")
        if rec.ended is not None:
            self._forget(session_id, close_reason=rec.ended)
            return _fail("session-ended", rec, rec.ended)
        if identity.presented and identity.fingerprint != rec.fingerprint:
            self.audit.record("session", "deny", "session-cert-mismatch", account=rec.account,
                              fingerprint=identity.fingerprint, session_fingerprint=rec.fingerprint,
                              presented_account=identity.account, client_ip=client_ip, session=rec.id[:16])
            yield self.end(rec.id, "session-cert-mismatch")
            return _fail("session-cert-mismatch", rec, "session-cert-mismatch")
        if identity.presented and not identity.ok:
            yield self.end(rec.id, "certificate-invalid")
            return _fail("certificate-invalid", rec, "certificate-invalid")
        at, why = self.ends_at(rec)
        if now >= at:
            yield self.end(rec.id, why)
            return _fail(why, rec, why)
        proved = rec.proved_at
        if identity.presented and identity.full_handshake:
            proved = max(proved, min(identity.handshake_at, now))
        if proved > rec.proved_at or (activity and now - rec.last_seen >= TOUCH_EVERY) or client_ip != rec.client_ip:
            new = yield self.store.touch(rec.id, proved_at=proved, last_seen=now if activity else rec.last_seen,
                                         client_ip=client_ip, long_grace=self.settings.long_grace)
            if new is None:
                self._forget(rec.id)
                return _fail("session-unknown")
            if new.ended is not None:
                self._forget(rec.id, close_reason=new.ended)
                return _fail("session-ended", new, new.ended)
            rec = new
        self._arm(rec)
        return SessionCheck(True, rec)

    @inlineCallbacks
    def _fresh_proof(self, session_id: str, identity: "ConnectionIdentity") -> "Flow[SessionCheck]":
        chk = yield self.check(session_id, identity, identity.client_ip)
        if not chk.ok:
            return chk
        now = self.clock.seconds()
        if not (identity.presented and identity.ok and identity.full_handshake
                and now - identity.handshake_at <= self.fresh_window()):
            return _fail("fresh-proof-required", chk.record)
        return chk

    def fresh_proof(self, session_id: str, identity: "ConnectionIdentity") -> "Deferred[SessionCheck]":
        """:meth:`check`, and ``fresh-proof-required`` unless this connection's full handshake with
        the session's certificate is at most :meth:`fresh_window` seconds old. A Deferred (SessionCheck)."""
        return self._fresh_proof(session_id, identity)

    @inlineCallbacks
    def activate_long(self, session_id: str, identity: "ConnectionIdentity") -> "Flow[SessionCheck]":
        """Switch the session to the long grace; needs a fresh proof of its certificate on this
        connection. A Deferred firing with a SessionCheck."""
        chk = yield self._fresh_proof(session_id, identity)
        if not chk.ok:
            return chk
        rec = chk.record
        assert rec is not None
        new = yield self.store.update(rec.id, long_until=rec.proved_at + self.settings.long_grace)
        if new is None:
            return _fail("session-unknown")
        self._arm(new)
        self.audit.record("session", "allow", "long-session-activated", account=rec.account,
                          fingerprint=rec.fingerprint, client_ip=identity.client_ip, session=rec.id[:16])
        return SessionCheck(True, new)

    @inlineCallbacks
    def deactivate_long(self, session_id: str, identity: "ConnectionIdentity") -> "Flow[SessionCheck]":
        """Back to the normal grace; needs a fresh proof like activation. A Deferred (SessionCheck)."""
        chk = yield self._fresh_proof(session_id, identity)
        if not chk.ok:
            return chk
        rec = chk.record
        assert rec is not None
        new = yield self.store.update(rec.id, long_until=0.0)
        if new is None:
            return _fail("session-unknown")
        self._arm(new)
        self.audit.record("session", "allow", "long-session-deactivated", account=rec.account,
                          fingerprint=rec.fingerprint, client_ip=identity.client_ip, session=rec.id[:16])
        return SessionCheck(True, new)

    # ------------------------------------------------------------------ end
    @inlineCallbacks
    def _mark_ended(self, rec: SessionRecord, reason: str) -> "Flow[bool]":
        new = yield self.store.update(rec.id, ended=reason, last_seen=max(rec.last_seen, self.clock.seconds()))
        self.audit.record("session", "end", reason, account=rec.account, fingerprint=rec.fingerprint,
                          client_ip=rec.client_ip, session=rec.id[:16])
        if self._m_ended is not None:
            self._m_ended.labels(reason).inc()
        return new is not None

    @inlineCallbacks
    def end(self, session_id: str, reason: str) -> "Flow[bool]":
        """End a live session: mark it ended in the store, close its WebSockets, audit.
        A Deferred: True if it was live. The WebSockets close even when the store fails."""
        try:
            rec = yield self.store.get(session_id)
            live = rec is not None and rec.ended is None
            if live:
                assert rec is not None
                yield self._mark_ended(rec, reason)
        finally:
            self._forget(session_id, close_reason=reason, force=True)
        return live

    @inlineCallbacks
    def end_where(self, *, account: str | None = None, fingerprint: str | None = None, reason: str
                  ) -> "Flow[int]":
        """End every live session of ``account`` and/or ``fingerprint``; a Deferred: how many."""
        if account is None and fingerprint is None:
            raise ValueError("end_where needs account and/or fingerprint")
        n = 0
        for rec in (yield self.store.list()):
            if rec.ended is None and (account is None or rec.account == account) \
                    and (fingerprint is None or rec.fingerprint == fingerprint):
                n += yield self.end(rec.id, reason)
        return n

    @inlineCallbacks
    def revalidate(self, still_valid: Callable[[SessionRecord], bool], reason: str) -> "Flow[int]":
        """After a trust reload: end every live session whose certificate ``still_valid`` refuses.

        A ``still_valid`` that raises counts as a refusal (fail closed). A Deferred: how many.
        Session checks that arrive meanwhile wait until it is done (at most the store deadline per
        operation), so a session of a revoked certificate is never served after the reload.
        """
        self._revalidating += 1
        try:
            n = yield self._revalidate(still_valid, reason)
        finally:
            self._revalidating -= 1
            if not self._revalidating:
                waiters, self._settle_waiters = self._settle_waiters, []
                for w in waiters:
                    w.callback(None)
        return n

    def _settled(self) -> "Deferred[None]":
        d: Deferred[None] = Deferred()
        self._settle_waiters.append(d)
        return d

    @inlineCallbacks
    def _revalidate(self, still_valid: Callable[[SessionRecord], bool], reason: str) -> "Flow[int]":
        n = 0
        for rec in (yield self.store.list()):
            if rec.ended is not None:
                continue
            try:
                ok = bool(still_valid(rec))
            except Exception:
                ok = False
            if not ok:
                n += yield self.end(rec.id, reason)
        return n

    # ------------------------------------------------------------------ timers
    def _arm(self, rec: SessionRecord) -> None:
        self._ensure_sweeping()
        at, _ = self.ends_at(rec)
        delay = max(0.0, at - self.clock.seconds())
        t = self._timers.get(rec.id)
        if t is not None and t.active():
            if abs(t.getTime() - at) > 1e-9:
                t.reset(delay)
            return
        self._timers[rec.id] = self.clock.callLater(delay, self._timer_fired, rec.id)

    def _forget(self, session_id: str, close_reason: str | None = None, *, force: bool = False) -> None:
        """Drop the timer; close the session's tunnels if it was tracked here (or ``force``)."""
        t = self._timers.pop(session_id, None)
        if t is not None and t.active():
            t.cancel()
        if t is not None or force:
            self.tunnels.close_session(session_id, WS_CLOSE_CODE, close_reason or "session-ended")

    @inlineCallbacks
    def _timer_fired(self, session_id: str) -> "Flow[None]":
        self._timers.pop(session_id, None)
        try:
            rec = yield self.store.get(session_id)  # another gateway may have moved the proof
        except Exception as e:  # store down: the session's time is up here, close its tunnels now
            log.warn("session end timer: store unavailable ({err}); closing the session's WebSockets", err=str(e))
            self.tunnels.close_session(session_id, WS_CLOSE_CODE, "session-store-unavailable")
            return
        if rec is None:
            self.tunnels.close_session(session_id, WS_CLOSE_CODE, "session-unknown")
            return
        if rec.ended is not None:
            self.tunnels.close_session(session_id, WS_CLOSE_CODE, rec.ended)
            return
        at, why = self.ends_at(rec)
        if self.clock.seconds() >= at:
            try:
                yield self.end(session_id, why)
            except Exception as e:
                log.warn("session end: store unavailable ({err})", err=str(e))
        else:
            self._arm(rec)

    def sweep(self) -> "Deferred[None]":
        """Close tunnels of tracked sessions that vanished or ended elsewhere; purge the store now and then.

        A store error is logged and the sweep tries again next interval (it never stops the loop).
        Returns a Deferred that never fails.
        """
        def failed(f: "Failure") -> None:  # e.g. Redis unreachable: keep sweeping
            kind = getattr(f.type, "__name__", "Error")
            log.warn("session sweep failed: {err}", err=f"{kind}: {f.getErrorMessage()}")
        self._sweeps += 1
        return self._sweep().addErrback(failed)

    @inlineCallbacks
    def _sweep(self) -> "Flow[None]":
        ids = list(self._timers)
        recs = (yield self.store.get_many(ids)) if ids else {}
        for sid in ids:
            if sid not in self._timers:  # ended meanwhile by a callback
                continue
            rec = recs.get(sid)
            if rec is None:
                self._forget(sid, close_reason="session-revoked")
            elif rec.ended is not None:
                self._forget(sid, close_reason=rec.ended)
        if self._sweeps % 12 == 1:
            yield self.store.purge(self.clock.seconds())

    def tracked(self) -> list[str]:
        """Ids of sessions with an end timer in this process (for tests and metrics)."""
        return list(self._timers)
