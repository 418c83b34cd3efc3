"""The JOC front door: ``POST /joc/api/authentication/login`` checked by certgate before JOC sees it.

JS7 JOC Cockpit's GUI and scripts log in with ``Authorization: Basic base64(account:password)``
(body ``{}``); an empty account (``Basic Og==``, the GUI's automatic login) means "the account of
my client certificate". Behind certgate, JOC no longer sees the certificate, so certgate applies
JOC's own rule itself (``clientCertCN.equals(account)``, exact; ``[trust] mapping_strip_domain``
strips ``user@domain`` / ``DOMAIN\\user`` first, as JOC's two-factor mode does):

0. the door claims every spelling of the login path that JOC might route to its login (the
   canonical path, see ``proxy.paths``, compared ignoring case and a trailing ``/``) and
   answers ``404`` to every one but the exact ``[joc] login_path``: JOC never sees them;

1. no ``Authorization``: ``420`` (JOC's answer), JOC never called;
2. the account (or, when empty, the certificate's account) must match the certificate, the
   factors certgate checks must pass (:meth:`LoginService.authenticate_async`: password with
   ``[login] password = file``; TOTP from the ``X-Certgate-TOTP`` header when the rules need
   it) -- else ``401`` with JOC's failure body, and JOC never sees the password;
3. the request goes to JOC with ``Authorization: Basic base64(account:password)`` (the
   certificate's account filled in when it was empty) and ``X-Certgate-TOTP`` blanked;
   A live certgate session of the same certificate that proved TOTP (``/.certgate/login``)
   stands in for the code (JOC's GUI has no field for it);
4. on JOC's ``200`` certgate opens its trusted session and adds its ``Set-Cookie`` (unless the
   request carries a live session of this certificate and account that proved as much: it is
   kept, e.g. one opened on certgate's login page before JOC's GUI loaded); with
   ``password = upstream`` the password counts as proven only then. JOC's ``X-Access-Token``
   and body pass through unchanged. A JOC ``401`` counts as a failed password for throttling.

JOC's GUI (a single-page app) must load before anyone logged in: without a live certgate
session, ``GET``/``HEAD`` of its files (below ``[joc] gui_prefix``, outside ``/joc/api/``) and
``POST`` to its pre-login API paths (``[joc] prelogin_api``) are forwarded without an account,
without ``Authorization``, ``X-Access-Token`` or certgate's cookie; paths with ``%``-escapes,
dot segments, ``//`` or ``\`` are not open. Its pages get the presence script in its waiting
mode (it starts once JOC's login opened the session).

JOC's logout (``POST`` to ``[joc] logout_path``, forwarded within a session by the gate) ends
certgate's session too, as soon as the gate decided to forward it (so a JOC that fails to
answer cannot keep it alive), and its response clears certgate's cookie.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks

from proxy.frontdoors.access import access_refusal
from proxy.http.messages import ConnContext, Forward, Headers, RequestHead, Response
from proxy.paths import same_login_path
from trust.escape import safe_json

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock
    from proxy.interfaces import AuditSink, Sessions
    from twisted.internet.defer import Deferred

    from proxy.config import Config, Route
    from proxy.login.outcome import AuthOutcome
    from proxy.login.service import LoginService

TOTP_HEADER = b"X-Certgate-TOTP"
MSG_MISSING = "The Header Authorization with the Base64 encoded authorization string is missing"
_CERT_REASONS = frozenset({"no-certificate", "certificate-invalid"})


def decode_joc_basic(value: bytes) -> tuple[str, str | None] | None:
    """JOC's reading of ``Authorization``: decode the part after the first space; the account is
    before the first ``:``, the password after it (None without a ``:``). None if not base64/UTF-8.
    """
    _, _, rest = value.decode("latin-1").strip().partition(" ")
    try:
        raw = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    account, sep, password = raw.partition(":")
    return account, (password if sep else None)


def joc_error(status: int, message: str) -> Response:
    """JOC's error body ``{"error": {"code": "JOC-<status>", "message": ...}}`` (JOC-420 for 420)."""
    body = json.dumps(safe_json({"error": {"code": f"JOC-{status}", "message": message}})).encode("utf-8")
    return Response(status, [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-cache, no-store")], body)


def joc_denied(account: str, status: int = 401, message: str = "Access denied",
               headers: Headers | None = None) -> Response:
    """JOC's failed-login answer (``SOSAuthCurrentAccountAnswer`` with ``isAuthenticated: false``)."""
    body = {"account": account, "isAuthenticated": False, "message": message, "isPermitted": False,
            "hasRole": False, "isApprover": False, "isApprovalRequestor": False, "forcePasswordChange": False,
            "enableTouch": True}
    hs: Headers = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-cache, no-store, must-revalidate")]
    return Response(status, hs + (headers or []), json.dumps(safe_json(body)).encode("utf-8"))


class JocFrontDoor:
    """See the module docstring. Built by ``proxy.app.service`` for routes of kind ``joc``."""

    def __init__(self, *, config: "Config", login: "LoginService", sessions: Sessions, clock: Clock,
                 audit: AuditSink) -> None:
        self._config = config
        self._login = login
        self._sessions = sessions
        self._clock = clock
        self._audit = audit
        self.login_path: str = config.joc.login_path
        self.logout_path: str = config.joc.logout_path
        self.gui_prefix: str = config.joc.gui_prefix
        self.prelogin_api = frozenset(config.joc.prelogin_api)

    def matches(self, head: RequestHead, route: "Route") -> bool:
        """Every spelling of the login path on a ``joc`` route (any method; only POST is let through),
        and the GUI's open paths when the request carries no certgate session cookie.

        ``head.path`` is canonical (dot segments, escapes, slashes already resolved); on top of
        that the login match ignores letter case and a trailing ``/``, which JOC's JAX-RS routing
        may accept too. :meth:`decide` refuses every login spelling but the exact ``login_path``.
        """
        if route.kind != "joc":
            return False
        if same_login_path(head.path, self.login_path):
            return True
        # with a certgate cookie the gate checks the session; a dead one comes back to without_session
        return self.is_open(head) and self._sessions.session_id(head) is None

    def is_open(self, head: RequestHead) -> bool:
        """A GUI file (GET/HEAD under ``gui_prefix``, not ``/joc/api/``) or a pre-login API POST,
        with a plain path (no ``%``, no dot segments, no ``//`` or ``\\``)."""
        raw = head.target.split(b"?", 1)[0]
        if not raw.startswith(b"/") or b"%" in raw or b"\\" in raw or b"//" in raw:
            return False
        path = raw.decode("latin-1")
        if any(seg in (".", "..") for seg in path.split("/")):
            return False
        if head.method == b"POST":
            return path in self.prelogin_api
        if head.method not in (b"GET", b"HEAD") or not self.gui_prefix:
            return False
        return path.startswith(self.gui_prefix) and not path.lower().startswith("/joc/api")

    def without_session(self, head: RequestHead, conn: ConnContext, route: "Route") -> "Response | Forward | None":
        """For the gate, when a request carrying a certgate cookie has no live session (the store is
        asynchronous, so :meth:`matches` cannot look): the GUI's open paths are served as without a
        cookie (:meth:`_open`); None for everything else."""
        if route.kind != "joc" or not self.is_open(head):
            return None
        return self._open(head, conn, route)

    def decide(self, head: RequestHead, conn: ConnContext, route: "Route") -> "Response | Forward | Deferred[Any]":
        ident = conn.identity
        if head.path != self.login_path:
            if same_login_path(head.path, self.login_path):
                return self._refuse(conn, None, "login-path-variant",
                                    joc_error(404, f"The login API is only served at {self.login_path}"))
            return self._open(head, conn, route)
        why = access_refusal(self._config, conn)
        if why is not None:
            return self._refuse(conn, ident.account, "access-denied", joc_denied(ident.account or "", 403), detail=why)
        if head.method != b"POST":
            return self._refuse(conn, None, "method-not-allowed",
                                Response(405, [(b"Allow", b"POST"), (b"Content-Type", b"text/plain")],
                                         b"Method Not Allowed\n"))
        values = head.get_all(b"authorization")
        if not values:
            return self._refuse(conn, None, "authorization-missing", joc_error(420, MSG_MISSING))
        if len(values) > 1:
            return self._refuse(conn, None, "authorization-repeated", joc_error(420, "Invalid Request"))
        creds = decode_joc_basic(values[0])
        if creds is None or not values[0].lower().startswith(b"basic "):
            return self._refuse(conn, None, "basic-malformed", joc_error(420, "Invalid Request"))
        submitted, password = creds
        account = submitted
        if not submitted:
            if not ident.ok or ident.account is None:  # JOC: empty account needs a certificate CN
                return self._refuse(conn, None, "no-certificate-account", joc_denied(""))
            account = ident.account
        totps = head.get_all(TOTP_HEADER)
        if len(totps) > 1:
            return self._refuse(conn, account, "totp-repeated", joc_denied(account))
        totp = totps[0].decode("latin-1") if totps else None
        d = self._session_facts(head, conn, account)
        d.addCallback(lambda st: self._check(head, conn, route, account, password, totp, st[0], st[1]))
        return d.addErrback(self._store_down, account)

    @inlineCallbacks
    def _session_facts(self, head: RequestHead, conn: ConnContext, account: str) -> Any:
        """(session proved TOTP, live session methods) for the request's certgate session, if any."""
        session_totp = yield self._session_totp(head, conn)
        live = yield self._live_methods(head, conn, account)
        return session_totp, live

    def _open(self, head: RequestHead, conn: ConnContext, route: "Route") -> "Response | Forward":
        """JOC's GUI before login: forwarded without any credential, account or certgate cookie."""
        why = access_refusal(self._config, conn)
        if why is not None:
            return self._refuse(conn, conn.identity.account, "access-denied", joc_denied("", 403), detail=why)
        sets: Headers = [(b"Authorization", b""), (b"X-Access-Token", b""), (TOTP_HEADER, b"")]
        cookies = [v for v in head.get_all(b"cookie")]
        if cookies:
            prefix = (self._config.sessions.cookie_name + "=").encode("ascii")
            keep = [p.strip() for v in cookies for p in v.split(b";") if p.strip() and not p.strip().startswith(prefix)]
            sets.append((b"Cookie", b"; ".join(keep)))
        return Forward(route, set_headers=sets, presence_await=head.method == b"GET")

    def session_forward(self, head: RequestHead, route: "Route", session_id: str, fwd: Forward) -> None:
        """Called by the gate for a request it forwards within a session: JOC's logout ends it."""
        if (route.kind != "joc" or head.method != b"POST"
                or not same_login_path(head.path, self.logout_path)):  # every spelling JOC may accept
            return
        def ended(live: Any) -> None:
            self._audit.record("joc-login", "logout", "joc-logout", account=fwd.account, session=session_id[:16],
                               ended=live)

        _later(self._sessions.end(session_id, "joc-logout").addCallback(ended), "end the session at JOC's logout")
        before = fwd.on_response
        clear = list(self._sessions.clear_cookie_headers())

        def on_response(status: int, headers: Headers) -> Headers:
            extra = before(status, headers) if before is not None else []
            return list(extra or []) + clear

        fwd.on_response = on_response

    def _store_down(self, f: Any, account: str) -> Response:
        from proxy.stores.interface import StoreError

        f.trap(StoreError)
        return joc_denied(account, 503, "Login is unavailable for a moment; try again shortly.",
                          [(b"Retry-After", str(self._login.retry_after).encode("ascii"))])

    @inlineCallbacks
    def _session_totp(self, head: RequestHead, conn: ConnContext) -> Any:
        """True when the request carries a live certgate session of this certificate's account
        that proved TOTP (e.g. through ``/.certgate/login``): JOC's GUI has no field for a code."""
        ident = conn.identity
        sid = self._sessions.session_id(head)
        if sid is None or not ident.ok:
            return False
        chk = yield self._sessions.check(sid, ident, ident.client_ip)
        return bool(chk.ok and chk.record.account == ident.account and "totp" in chk.record.methods)

    @inlineCallbacks
    def _live_methods(self, head: RequestHead, conn: ConnContext, account: str) -> Any:
        """The methods of a live certgate session of this certificate and account that the request
        carries (e.g. opened on certgate's login page before JOC's GUI loaded), else None."""
        ident = conn.identity
        sid = self._sessions.session_id(head)
        if sid is None or not ident.ok:
            return None
        chk = yield self._sessions.check(sid, ident, ident.client_ip)
        if not (chk.ok and chk.record.account == account and chk.record.fingerprint == ident.fingerprint):
            return None
        return frozenset(chk.record.methods)

    def _refuse(self, conn: ConnContext, account: str | None, reason: str, resp: Response, **extra: Any) -> Response:
        ident = conn.identity
        self._audit.record("joc-login", "deny", reason, account=account, fingerprint=ident.fingerprint,
                           client_ip=ident.client_ip, **extra)
        return resp

    def _check(self, head: RequestHead, conn: ConnContext, route: "Route", account: str, password: str | None,
               totp: str | None, session_totp: bool = False,
               live: frozenset[str] | None = None) -> "Response | Deferred[Any]":
        login = self._login
        file_mode = login.config.login.password == "file"
        # MaxStartups: a slot shared by every gateway on the store; ``busy`` is answered 503
        d = login.authenticate_with_slot(account=account, conn=conn,
                                         password=(password or None) if file_mode else None, totp=totp,
                                         open_session=False)
        d.addCallback(lambda out: self._after(conn, route, account, password, out, session_totp, live))
        return d

    def _after(self, conn: ConnContext, route: "Route", account: str, password: str | None,
               out: "AuthOutcome", session_totp: bool = False,
               live: frozenset[str] | None = None) -> "Response | Forward | Deferred[Any]":
        upstream_pw = self._login.config.login.password == "upstream"
        if out.ok:
            # a live session of this certificate and account that already proved as much is kept
            keep = live is not None and (set(out.proven) | {"password"}) <= live
            return self._forward(conn, route, account, password, out.proven, None, open_session=not keep)
        if out.partial:
            missing = {m for r in out.required for m in r} - set(out.proven)
            if session_totp and missing <= ({"totp", "password"} if upstream_pw else {"totp"}):
                # the live session proved TOTP: JOC checks the password, the session stays as it is
                self._audit.record("joc-login", "allow", "session-totp", account=account,
                                   fingerprint=conn.identity.fingerprint, client_ip=conn.identity.client_ip)
                return self._forward(conn, route, account, password, out.proven, None, open_session=False)
            if upstream_pw and missing <= {"password"}:
                return self._forward(conn, route, account, password, out.proven, out.receipt)
            if "totp" in missing:
                return joc_denied(account, 401, "A TOTP code is required (header X-Certgate-TOTP)",
                                  [(b"WWW-Authenticate", b'X-Certgate-TOTP realm="certgate"')])
            return self._refuse(conn, account, "factors-missing", joc_denied(account), missing=sorted(missing))
        if out.reason == "throttled":
            return joc_denied(account, 401, "Access denied", [(b"Retry-After", str(out.retry_after or 1).encode())])
        if out.reason == "busy":
            return joc_denied(account, 503, out.public_message, [(b"Retry-After", b"1")])
        if out.reason == "session-store-unavailable":
            return joc_denied(account, 503, out.public_message, [(b"Retry-After", str(out.retry_after or 1).encode())])
        if out.reason == "session-limit":
            return joc_denied(account, 403, out.public_message)
        if out.reason in _CERT_REASONS:
            return joc_denied(account, 401, out.public_message)
        return joc_denied(account)

    @inlineCallbacks
    def _forward(self, conn: ConnContext, route: "Route", account: str, password: str | None,
                 proven: frozenset[str], receipt: str | None, open_session: bool = True) -> Any:
        """Forward the login to JOC; a Deferred (Forward, or a refusal Response). The session is
        opened before forwarding and its cookie released only on JOC's 200 (ended otherwise)."""
        ident = conn.identity
        opened: Any = None
        if open_session:
            opened = yield self._open_session(conn, account, proven, receipt)
            if isinstance(opened, Response):
                return opened
        cred = account if password is None else f"{account}:{password}"
        sets: Headers = [(b"Authorization", b"Basic " + base64.b64encode(cred.encode("utf-8"))),
                         (TOTP_HEADER, b"")]

        def on_response(status: int, headers: Headers) -> Headers:
            if status != 200:
                if opened is not None:
                    _later(self._sessions.end(opened[0].id, "upstream-refused"), "end the unused session")
                self._upstream_refused(conn, account, status)
                return []
            if opened is None:
                return []
            return opened[1]

        return Forward(route, set_headers=sets, account=account, on_response=on_response)

    def _upstream_refused(self, conn: ConnContext, account: str, status: int) -> None:
        ident = conn.identity
        locked = None
        if status == 401:  # JOC refused the password: count it like certgate's own failures
            from proxy.login.throttle import ThrottleState, keys_for

            d = self._login.throttle.fail(keys_for(account, ident.fingerprint, ident.client_ip),
                                          self._clock.seconds())
            done = d.result if d.called else None
            locked = done.blocked if isinstance(done, ThrottleState) else None
            _later(d, "count the refused password")
        self._audit.record("joc-login", "deny", "upstream-refused", account=account, fingerprint=ident.fingerprint,
                           client_ip=ident.client_ip, status=status, locked=locked)

    @inlineCallbacks
    def _open_session(self, conn: ConnContext, account: str, proven: frozenset[str], receipt: str | None) -> Any:
        """(record, cookies), or the refusal Response (store down, session limit, receipt refused)."""
        from proxy.login.service import MSG_LIMIT, MSG_STORE
        from proxy.stores.interface import LimitReached, StoreError

        ident = conn.identity
        if receipt is not None:
            out = yield self._login.authenticate(account=account, conn=conn, receipt=receipt,
                                                 password_proven_upstream=True, open_session=True)
            if not out.ok:
                if out.reason == "session-store-unavailable":
                    return joc_denied(account, 503, out.public_message,
                                      [(b"Retry-After", str(out.retry_after or 1).encode())])
                if out.reason == "session-limit":
                    return joc_denied(account, 403, out.public_message)
                return joc_denied(account)
            return (out.session, list(out.set_cookie))
        methods = sorted(proven | {"password"})
        try:
            rec, cookies = yield self._sessions.open(ident, account, methods, ident.client_ip)
        except LimitReached:
            return joc_denied(account, 403, MSG_LIMIT)
        except StoreError as e:
            self._audit.record("joc-login", "error", "session-open-failed", account=account,
                               fingerprint=ident.fingerprint, client_ip=ident.client_ip, error=str(e)[:200])
            return joc_denied(account, 503, MSG_STORE, [(b"Retry-After", str(self._login.retry_after).encode())])
        self._audit.record("joc-login", "allow", "ok", account=account, fingerprint=ident.fingerprint,
                           client_ip=ident.client_ip, methods=methods)
        return (rec, list(cookies))


def _later(d: Any, what: str) -> None:
    """Let ``d`` finish on its own; a failure is logged (the response is already on its way)."""
    from twisted.logger import Logger

    d.addErrback(lambda f: Logger().warn("JOC front door: cannot {what}: {err}", what=what, err=f.getErrorMessage()))
