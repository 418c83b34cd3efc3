"""``LoginService``: one place that decides whether a login attempt proves enough factors.

Used by certgate's own login page and JSON API (:mod:`proxy.login.pages`,
:mod:`proxy.login.api`) and by the Cockpit and JOC front doors. Order of checks in
:meth:`LoginService.authenticate` (the first failure ends the attempt):

1. throttling: a locked account, certificate or client IP is refused (``throttled``);
2. the certificate: ``tls-cert`` is proven only when *this connection* presented a valid
   certificate whose account equals the submitted one (``trust.mapping.account_matches``);
3. a receipt, if given: genuine, unexpired, same account and certificate, never used before
   (consumed now); its methods count as proven;
4. the password: with ``password = file`` checked against the scrypt file; with ``upstream``
   only the front door can prove it (``password_proven_upstream=True``);
5. the TOTP code: ``^[0-9]{6}$``, valid within the window, its time step never used before;
5b. the WebAuthn assertion (:mod:`proxy.login.webauthn_service`): a challenge certgate sealed
   for this account and certificate, never used before, one of the account's keys, origin
   and RP id of ``[webauthn]``, signature, user verification, a counter that moved forward;
6. the rules: a satisfied rule opens the trusted session (``ok``); otherwise a partial success
   answers a new receipt and the rules still reachable (Keystone ``required_auth_methods``).

Every decision is audited with account, fingerprint, client IP and a reason code, never a
secret. Public messages are uniform: they never say whether an account exists or which
factor failed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import inlineCallbacks

from proxy.gate import wording
from proxy.login import factors
from proxy.login.keys import derive_key, load_secret
from proxy.login.outcome import AuthOutcome
from proxy.login.passwords import PasswordFile, PasswordFileError
from proxy.login.receipts import ReceiptCodec, ReceiptError, consume
from proxy.login.throttle import SharedStartups, Throttle, keys_for
from proxy.login.totp import TotpError, TotpSecrets, check_code, valid_syntax
from proxy.stores.interface import LimitReached, StoreError

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config
    from proxy.clock import Clock
    from proxy.interfaces import AuditSink, MetricsRegistry, Sessions, SessionStore
    from twisted.internet.defer import Deferred

    from proxy.http.messages import ConnContext

MSG_FAILED = "Authentication failed. Check the account, the password and the code, then try again."
MSG_CERT = "A valid client certificate for this account is required (check which certificate the browser chose)."
MSG_THROTTLED = "Too many failed attempts. Try again later."
MSG_BUSY = "Too many logins are in progress. Try again in a moment."
MSG_PARTIAL = "More authentication methods are required."
MSG_OK = "Logged in."
MSG_STORE = "Login is unavailable for a moment (the session store cannot be reached). Try again shortly."
MSG_LIMIT = "This account already has the maximum number of sessions open. Log out of one of them first."
MAX_ACCOUNT = 256

_CERT_REASONS = frozenset({"no-certificate", "certificate-invalid", "cn-mismatch"})


def _public_message(reason: str, identity: Any) -> str:
    """The plain-words message for a failed attempt (:mod:`proxy.gate.wording`; uniform for factors)."""
    if reason == "cn-mismatch":
        return wording.WRONG_ACCOUNT
    if reason in _CERT_REASONS:
        return wording.certificate_problem(identity) or MSG_CERT
    return MSG_FAILED


class LoginService:
    """Factor checks, receipts, throttling and session opening for every login path."""

    def __init__(self, *, config: Config, store: SessionStore, sessions: Sessions, clock: Clock, audit: AuditSink,
                 rng: Any = None,
                 defer_to_thread: Callable[..., "Deferred[Any]"] | None = None) -> None:
        self.config = config
        self.store = store
        self.sessions = sessions
        self.clock = clock
        self.audit = audit
        lc = config.login
        self._mode: str = lc.password
        self._lifetime = float(lc.receipt_lifetime)
        self._window = int(lc.totp_window)
        self.secret = load_secret(self._path(lc.secret_key), create=True)
        self.receipts = ReceiptCodec(derive_key(self.secret, "receipt"))
        self.passwords = PasswordFile(self._path(lc.password_file)) if lc.password_file else None
        self.totp = (TotpSecrets(self._path(lc.totp_secrets), self._path(lc.totp_key))
                     if lc.totp_secrets and lc.totp_key else None)
        self.throttle = Throttle(store, limit=int(lc.failure_limit), window=float(lc.failure_window),
                                 lockout=float(lc.lockout))
        self.startups = SharedStartups(store, lc.max_startups, clock, float(lc.timeout), rng)
        self.retry_after = max(1, math.ceil(config.sessions.store_deadline))
        self._strip_domain = config.trust.mapping.strip_domain
        self._defer_to_thread = defer_to_thread
        self.webauthn = None
        if config.webauthn.rp_id and config.webauthn.credentials:
            from proxy.login.webauthn_service import WebAuthnFactor

            self.webauthn = WebAuthnFactor(config=config, secret=self.secret, store=store, audit=audit,
                                           base_dir=Path(config.base_dir), defer_to_thread=defer_to_thread)
        self._duration: Any = None

    def use_metrics(self, metrics: MetricsRegistry) -> None:
        """Observe every login attempt's duration by result (ok, partial, refused)."""
        self._duration = metrics.histogram("login_duration_seconds",
                                           "Login attempt (all factors checked here) by result", ("result",))

    def _observe(self, t0: float, out: AuthOutcome) -> AuthOutcome:
        if self._duration is not None:
            result = "ok" if out.ok else ("partial" if out.receipt is not None else "refused")
            self._duration.labels(result).observe(self.clock.seconds() - t0)
        return out

    def _path(self, p: Any) -> Path:
        path = Path(p)
        return path if path.is_absolute() else Path(self.config.base_dir) / path

    # ------------------------------------------------------------------ rules

    def required_methods(self, account: str) -> list[list[str]]:
        """The configured rules of ``account``: its ``[account:NAME]`` section, else ``[login]``."""
        rules = self.config.account_rules.get(account, self.config.login.required_auth_methods)
        return factors.normalize_rules(rules)

    def totp_enrolled(self, account: str) -> bool:
        """True when ``account`` has a TOTP secret; True too when the secrets cannot be read
        (an unreadable file must not make the factor optional)."""
        if self.totp is None:
            return False
        try:
            return self.totp.enrolled(account)
        except TotpError:
            return True

    def webauthn_enrolled(self, account: str) -> bool:
        """True when ``account`` has a security key (or the key file cannot be read)."""
        return self.webauthn is not None and self.webauthn.enrolled(account)

    def effective_rules(self, account: str) -> list[list[str]]:
        """The rules that apply now (:func:`factors.effective_rules` with the enrolment)."""
        return factors.effective_rules(self.required_methods(account), self.totp_enrolled(account),
                                       self.webauthn_enrolled(account))

    def needs_webauthn(self, account: str) -> bool:
        """True when every rule that applies to ``account`` needs its security key."""
        rules = self.effective_rules(account)
        return bool(rules) and all(factors.WEBAUTHN in r for r in rules)

    def webauthn_options(self, account: str, conn: "ConnContext") -> dict[str, Any] | None:
        """Request options for ``account``'s keys bound to this connection's certificate, or None."""
        if self.webauthn is None or not conn.identity.ok:
            return None
        return self.webauthn.login_options(account, conn.identity.fingerprint, self.clock.seconds())

    def needs_totp(self, account: str) -> bool:
        """True when every rule that applies to ``account`` needs a TOTP code."""
        rules = self.effective_rules(account)
        return bool(rules) and all(factors.TOTP in r for r in rules)

    def needs_password(self, account: str) -> bool:
        """True when every rule that applies to ``account`` needs the password."""
        rules = self.effective_rules(account)
        return bool(rules) and all(factors.PASSWORD in r for r in rules)

    # ------------------------------------------------------------------ MaxStartups

    def busy_outcome(self, account: str, conn: "ConnContext") -> AuthOutcome:
        """The outcome (and audit record) of a login refused by MaxStartups."""
        self._audit(account, conn, "refuse", "busy")
        return AuthOutcome(False, account, frozenset(), [], None, "busy", MSG_BUSY, retry_after=1)

    # ------------------------------------------------------------------ authenticate

    def authenticate(self, *, account: str, conn: "ConnContext", password: str | None = None,
                     totp: str | None = None, receipt: str | None = None,
                     password_proven_upstream: bool = False, open_session: bool = True,
                     webauthn: str | None = None) -> "Deferred[AuthOutcome]":
        """Check one login attempt; on ``ok`` the trusted session is opened (unless ``open_session``
        is false) and ``set_cookie`` carries its cookie. Runs scrypt in the calling thread.
        A Deferred; a store that cannot answer gives the outcome ``session-store-unavailable``
        (nothing is accepted that could not be recorded)."""
        t0 = self.clock.seconds()
        return self._guarded(self._authenticate(account, conn, password, totp, receipt,
                                                password_proven_upstream, open_session, False, webauthn),
                             account, conn, t0)

    def authenticate_async(self, *, account: str, conn: "ConnContext", password: str | None = None,
                           totp: str | None = None, receipt: str | None = None,
                           password_proven_upstream: bool = False, open_session: bool = True,
                           webauthn: str | None = None) -> "Deferred[AuthOutcome]":
        """Like :meth:`authenticate`, with the scrypt work in a thread (the rest in the caller's)."""
        t0 = self.clock.seconds()
        return self._guarded(self._authenticate(account, conn, password, totp, receipt,
                                                password_proven_upstream, open_session, True, webauthn),
                             account, conn, t0)

    @inlineCallbacks
    def _authenticate(self, account: Any, conn: "ConnContext", password: str | None, totp: str | None,
                      receipt: str | None, upstream: bool, open_session: bool, threaded: bool,
                      webauthn: str | None = None) -> Any:
        pre = yield self._precheck(account, conn)
        if isinstance(pre, AuthOutcome):
            return pre
        pw_ok = None
        if password is not None and self._mode == "file":
            if threaded and self._defer_to_thread is not None:
                pw_ok = yield self._defer_to_thread(self._check_password, pre, password)
            else:
                pw_ok = self._check_password(pre, password)
        out = yield self._finish(pre, conn, password, pw_ok, totp, receipt, upstream, open_session, webauthn)
        return out

    def _guarded(self, d: "Deferred[AuthOutcome]", account: Any, conn: "ConnContext", t0: float
                 ) -> "Deferred[AuthOutcome]":
        return d.addErrback(self._store_down, account, conn).addCallback(lambda out: self._observe(t0, out))

    def _store_down(self, f: Any, account: Any, conn: "ConnContext") -> AuthOutcome:
        """The outcome (and audit record) of an attempt the store could not serve (StoreError only)."""
        f.trap(StoreError)
        shown = account[:MAX_ACCOUNT] if isinstance(account, str) else ""
        self._audit(shown, conn, "refuse", "session-store-unavailable", error=f.getErrorMessage()[:300])
        return AuthOutcome(False, shown, frozenset(), [], None, "session-store-unavailable", MSG_STORE,
                           retry_after=self.retry_after)

    def authenticate_in_slot(self, slot: str, **kw: Any) -> "Deferred[AuthOutcome]":
        """:meth:`authenticate_async` holding the MaxStartups ``slot`` the caller acquired
        (``self.startups.try_acquire()``); the slot is released however the attempt ends."""
        try:
            d = self.authenticate_async(**kw)
        except BaseException:
            self.startups.release(slot)
            raise

        def done(result: Any) -> Any:
            self.startups.release(slot)
            return result

        return d.addBoth(done)

    def authenticate_with_slot(self, **kw: Any) -> "Deferred[AuthOutcome]":
        """:meth:`authenticate_async` inside a MaxStartups slot shared by every gateway on the store:
        the outcome ``busy`` when refused, ``session-store-unavailable`` when the store fails."""
        account, conn = kw.get("account"), kw["conn"]

        t0 = self.clock.seconds()

        def go(slot: str | None) -> Any:
            if slot is None:
                return self._observe(t0, self.busy_outcome(account if isinstance(account, str) else "", conn))
            return self.authenticate_in_slot(slot, **kw)  # observed by authenticate_async
        def down(f: Any) -> AuthOutcome:
            return self._observe(t0, self._store_down(f, account, conn))
        return self.startups.try_acquire().addCallbacks(go, down)

    def _check_password(self, account: str, password: str) -> bool | str:
        """True/False, or ``"password-file-error"`` when the file is unusable (fails closed)."""
        assert self.passwords is not None
        try:
            return self.passwords.verify(account, password)
        except PasswordFileError:
            return "password-file-error"

    @inlineCallbacks
    def _precheck(self, account: Any, conn: "ConnContext") -> Any:
        """Throttling and the certificate; the canonical account, or a failed outcome."""
        ident = conn.identity
        now = self.clock.seconds()
        shown = account if isinstance(account, str) else ""
        if not isinstance(account, str) or not account or len(account) > MAX_ACCOUNT:
            return (yield self._fail(shown[:MAX_ACCOUNT], conn, "bad-account", [], count=[]))
        state = yield self.throttle.check(keys_for(account, ident.fingerprint, ident.client_ip), now)
        if state.blocked:
            self._audit(account, conn, "refuse", "throttled", locked=(state.key or "").split(":", 1)[0])
            return AuthOutcome(False, account, frozenset(), [], None, "throttled", MSG_THROTTLED,
                               retry_after=state.retry_after)
        if not ident.presented:
            return (yield self._fail(account, conn, "no-certificate", [], count=["ip"]))
        if not ident.ok:
            return (yield self._fail(account, conn, "certificate-invalid", [], count=["cert", "ip"]))
        from trust.mapping import account_matches

        if not account_matches(ident.account, account, self._strip_domain):
            return (yield self._fail(account, conn, "cn-mismatch", [], count=["cert", "ip"]))
        canonical = str(ident.account)
        if canonical != account:  # domain stripped: the canonical account's lock applies too
            state = yield self.throttle.check(keys_for(canonical, None, None), now)
            if state.blocked:
                self._audit(canonical, conn, "refuse", "throttled", locked="account")
                return AuthOutcome(False, canonical, frozenset(), [], None, "throttled", MSG_THROTTLED,
                                   retry_after=state.retry_after)
        return canonical

    @inlineCallbacks
    def _finish(self, account: str, conn: "ConnContext", password: str | None, pw_ok: bool | str | None,
                totp: str | None, receipt: str | None, upstream_ok: bool, open_session: bool,
                webauthn: str | None = None) -> Any:
        ident = conn.identity
        now = self.clock.seconds()
        rules = self.effective_rules(account)
        proven = {factors.TLS_CERT}
        not_after: float | None = None
        if receipt is not None:
            try:
                rec = self.receipts.open(receipt, account=account, fingerprint=ident.fingerprint, now=now)
                yield consume(self.store, rec)
            except ReceiptError as e:
                return (yield self._fail(account, conn, "receipt-invalid", rules, detail=e.reason))
            proven |= set(rec.methods)
            not_after = rec.expires_at
        if password is not None:
            if self._mode != "file":
                return (yield self._fail(account, conn, "password-not-checkable", rules))
            if pw_ok is None:
                pw_ok = self._check_password(account, password)
            if pw_ok == "password-file-error":
                return (yield self._fail(account, conn, "password-file-error", rules))
            if pw_ok is not True:
                return (yield self._fail(account, conn, "bad-password", rules))
            proven.add(factors.PASSWORD)
        if upstream_ok:
            if self._mode != "upstream":
                return (yield self._fail(account, conn, "password-not-upstream", rules))
            proven.add(factors.PASSWORD)
        if totp is not None:
            why = yield self._check_totp(account, totp, now)
            if why:
                return (yield self._fail(account, conn, why, rules))
            proven.add(factors.TOTP)
        key_used: str | None = None
        if webauthn is not None:
            if self.webauthn is None:
                return (yield self._fail(account, conn, "webauthn-not-configured", rules))
            extra: dict[str, Any] = {"fingerprint": ident.fingerprint, "client_ip": ident.client_ip}
            why = yield self.webauthn.check(account, ident.fingerprint, webauthn, now, extra)
            if why:
                return (yield self._fail(account, conn, why, rules, detail=extra.get("detail")))
            proven.add(factors.WEBAUTHN)
            key_used = extra.get("credential")
        done = frozenset(proven)
        if not rules:
            return (yield self._fail(account, conn, "no-usable-rule", self.required_methods(account)))
        if factors.satisfied(rules, done) is not None:
            return (yield self._succeed(account, conn, done, open_session, credential=key_used))
        token, rec2 = self.receipts.issue(account=account, fingerprint=ident.fingerprint or "",
                                          methods=sorted(done), now=now, lifetime=self._lifetime,
                                          not_after=not_after)
        required = factors.reachable(rules, done)
        need = factors.missing(rules, done)
        self._audit(account, conn, "partial", "more-methods-required", methods=factors.ordered(done), missing=need)
        options = self.webauthn_options(account, conn) if factors.WEBAUTHN in need else None
        return AuthOutcome(False, account, done, required, token, "more-methods-required", MSG_PARTIAL,
                           receipt_expires_at=rec2.expires_at, webauthn_options=options)

    @inlineCallbacks
    def _check_totp(self, account: str, code: str, now: float) -> Any:
        """'' when the code proves TOTP (its step now used), else the reason code."""
        if not valid_syntax(code):
            return "bad-totp"
        if self.totp is None:
            return "totp-not-enrolled"
        try:
            if not self.totp.enrolled(account):
                return "totp-not-enrolled"
            secret = self.totp.secret(account)
        except TotpError:
            return "totp-unavailable"
        step = check_code(secret, code, now, self._window)
        if step is None:
            return "bad-totp"
        if not (yield self.store.use_totp_step(account, step)):  # StoreError: refused, never accepted
            return "totp-replay"
        return ""

    @inlineCallbacks
    def _succeed(self, account: str, conn: "ConnContext", proven: frozenset[str], open_session: bool,
                 credential: str | None = None) -> Any:
        ident = conn.identity
        yield self.throttle.succeed(keys_for(account, ident.fingerprint, None))
        record, cookies, ends = None, [], None
        if open_session:
            try:
                record, cookies = yield self.sessions.open(ident, account, factors.ordered(proven), ident.client_ip)
            except LimitReached:
                self._audit(account, conn, "refuse", "session-limit", methods=factors.ordered(proven))
                return AuthOutcome(False, account, proven, [], None, "session-limit", MSG_LIMIT)
            ends = self.sessions.ends_at(record)[0]
        extra = {"credential": credential} if credential else {}  # the key whose counter and last use moved
        self._audit(account, conn, "allow", "ok", methods=factors.ordered(proven),
                    session=record.id[:16] if record is not None else None, **extra)
        return AuthOutcome(True, account, proven, [], None, "ok", MSG_OK, session=record,
                           set_cookie=list(cookies), session_expires_at=ends)

    @inlineCallbacks
    def _fail(self, account: str, conn: "ConnContext", reason: str, rules: list[list[str]], *,
              count: list[str] | None = None, detail: str | None = None) -> Any:
        ident = conn.identity
        parts = count if count is not None else ["account", "cert", "ip"]
        keys = keys_for(account if "account" in parts else None,
                        ident.fingerprint if "cert" in parts else None,
                        ident.client_ip if "ip" in parts else None)
        state = (yield self.throttle.fail(keys, self.clock.seconds())) if keys else None
        extra: dict[str, Any] = {"detail": detail} if detail else {}
        if state is not None and state.blocked:
            extra["locked"] = (state.key or "").split(":", 1)[0]
        self._audit(account, conn, "deny", reason, **extra)
        msg = _public_message(reason, ident)
        return AuthOutcome(False, account, frozenset(), [], None, reason, msg)

    def _audit(self, account: str, conn: "ConnContext", decision: str, reason: str, **extra: Any) -> None:
        ident = conn.identity
        self.audit.record("login", decision, reason, account=account, fingerprint=ident.fingerprint,
                          client_ip=ident.client_ip, **extra)
