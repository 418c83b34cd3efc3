"""The per-request decision: certgate endpoints, front doors, certificate-only access, sessions.

``Gate.decide(head, conn)`` returns a :mod:`proxy.http.messages` decision (or a Deferred firing
with one). Order, first match wins:

1. paths under ``/.certgate/`` go to the mounted endpoints (exact path; unknown -> 404);
2. login front doors (Cockpit, JOC) whose ``matches(head, route)`` is true;
3. ``[listen] client_auth = none``: forwarded anonymously (no account header);
4. a *presented but invalid* certificate (want mode): 403 page saying why;
5. certificate-only mode (a ``required_auth_methods`` rule, global or the account's, is
   exactly ``["tls-cert"]``): a valid certificate + the access rules -> forward as its account;
   no certificate -> a live session cookie still works inside its grace window, else 403;
6. session mode: session cookie -> ``SessionManager.check`` -> forward with the account,
   else login (a front door's own login page, e.g. Cockpit's, or a 302 to certgate's for
   browser navigations; 401 JSON otherwise).

The gate never re-verifies certificates: it reads the frozen ``ConnectionIdentity``.
Every path comparison uses ``head.path``: the canonical path the HTTP layer made once
(``proxy.paths``), which is also what the upstream receives; the gate never decodes it again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence
from urllib.parse import quote

from twisted.internet.defer import Deferred

from proxy.gate import wording
from proxy.gate.policy import ForwardPolicy, RewriteChooser
from proxy.http.messages import ConnContext, Decision, Forward, Headers, RequestHead, Response
from proxy.http.wire import ERROR_PAGE
from proxy.clock import Clock
from proxy.interfaces import AuditSink, DecisionOrDeferred, Endpoint, FrontDoor, MetricsRegistry, Sessions
from proxy.stores.interface import StoreError, retry_after
from trust.escape import safe_html, safe_json

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config, Route, SessionsSection

PREFIX = "/.certgate/"
LOGIN_PATH = "/.certgate/login"
CERT_ONLY = ["tls-cert"]



# --------------------------------------------------------------------------- pages

_NO_STORE: Headers = [(b"Cache-Control", b"no-store")]


def error_page(head: RequestHead, status: int, code: str, title: str, message: str, *,
               extra_html: str = "", headers: Headers | None = None) -> Response:
    """An error answer: an HTML page for browser navigations, JSON ``{"error", "message"}`` otherwise.

    ``code`` is a stable machine-readable reason; ``message`` is plain text (escaped here).
    ``extra_html`` is trusted markup added after the message (callers escape their parts).
    The page links back to the login page (with ``next`` = this GET's target).
    """
    hs = list(_NO_STORE) + (headers or [])
    if head.wants_html():
        login = LOGIN_PATH
        if head.method in (b"GET", b"HEAD") and not head.path.startswith(PREFIX):
            login += "?next=" + quote(safe_next(head.target), safe="/")
        body = ERROR_PAGE.format(title=safe_html(title), message=safe_html(message), extra=extra_html,
                                 links=f'<p><a href="{safe_html(login)}">Go to the login page</a></p>\n',
                                 footer=f"reason code <code>{safe_html(code)}</code>").encode("utf-8")
        hs += [(b"Content-Type", b"text/html; charset=utf-8"),
               (b"Content-Security-Policy", b"default-src 'none'; style-src 'unsafe-inline'"),
               (b"X-Frame-Options", b"DENY")]
        return Response(status, hs, body)
    hs.append((b"Content-Type", b"application/json"))
    return Response(status, hs, json.dumps(safe_json({"error": code, "message": message})).encode("utf-8"))


def retry_after_for(sessions: SessionsSection) -> bytes:
    """The ``Retry-After`` seconds of a 503 ``session-store-unavailable`` (``[sessions] store_deadline``,
    rounded up, at least 1)."""
    return retry_after(sessions.store_deadline)


def store_unavailable(head: RequestHead, conn: ConnContext, audit: AuditSink, error: str = "",
                      retry_after: bytes = b"2") -> Response:
    """The 503 ``session-store-unavailable`` answer (with ``Retry-After``), audited with the store's error."""
    audit.record("gate", "deny", "session-store-unavailable", client_ip=conn.identity.client_ip, error=error[:300])
    return error_page(head, 503, "session-store-unavailable", "Temporarily unavailable",
                      "certgate cannot reach its session store; try again shortly.",
                      headers=[(b"Retry-After", retry_after)])


def safe_next(target: bytes) -> str:
    """The request target as a same-origin ``next`` value: an absolute path, never ``//host``."""
    t = target.decode("latin-1")
    if not t.startswith("/") or t.startswith("//") or t.startswith("/\\"):
        return "/"
    return t


# --------------------------------------------------------------------------- gate

class Gate:
    """Decides each request; see the module docstring for the order.

    ``sessions`` is a :class:`proxy.sessions.manager.SessionManager` (may be None only when every
    rule is certificate-only or client auth is ``none``). ``endpoints`` maps exact paths under
    ``/.certgate/`` to handlers: the caller mounts certgate's own (the session endpoints of
    :func:`proxy.sessions.presence.session_endpoints`, the login's), so the gate imports none of
    them. ``front_doors`` are consulted in order. ``rewrites`` chooses each Forward's response
    rewrite (the presence script: :class:`proxy.sessions.injection.PresenceRewrites`); none without.
    """

    def __init__(self, *, config: "Config", sessions: Sessions | None, clock: Clock, audit: AuditSink,
                 endpoints: Mapping[str, Endpoint], front_doors: Sequence[FrontDoor],
                 metrics: MetricsRegistry | None = None, rewrites: RewriteChooser | None = None) -> None:
        self._config = config
        self._sessions = sessions
        self._clock = clock
        self._audit = audit
        self._retry_after = retry_after_for(config.sessions)
        if sessions is not None and metrics is not None:
            sessions.use_metrics(metrics)
        self._endpoints: dict[str, Endpoint] = dict(endpoints)
        for p in self._endpoints:
            if not p.startswith(PREFIX):
                raise ValueError(f"endpoint path {p!r} is not under {PREFIX}")
        self._front_doors = tuple(front_doors)
        self._route_for = config.route_for
        self._single_route = config.routes[-1] if len(config.routes) == 1 else None
        self._none_mode = config.listen.client_auth == "none"
        self._global_cert_only = CERT_ONLY in config.login.required_auth_methods
        self._account_cert_only = {a: (CERT_ONLY in r) for a, r in config.account_rules.items()}
        self._cookie_prefix = (config.sessions.cookie_name + "=").encode("ascii")
        self._access_rules = list(config.access_rules)
        self._access_check: Callable[..., Any] | None = None
        if self._access_rules:
            from trust.access import check  # the single source of access decisions

            self._access_check = check
        self._policy = ForwardPolicy(config, rewrites)  # body limits and rewrites, as data on each Forward
        self._forwards = self._denied = self._logins = self._local = None
        if metrics is not None:
            fam = metrics.counter("gate_decisions_total", "Gate decisions by outcome", ("outcome",),
                                  reactor_only=True)
            self._forwards = fam.labels("forward")
            self._denied = fam.labels("denied")
            self._logins = fam.labels("login")
            self._local = fam.labels("local")

    # ---------------------------------------------------------------- helpers

    def add_endpoint(self, path: str, endpoint: Endpoint) -> None:
        """Mount ``endpoint`` at exact ``path`` (under ``/.certgate/``); replaces an existing one."""
        if not path.startswith(PREFIX):
            raise ValueError(f"endpoint path {path!r} is not under {PREFIX}")
        self._endpoints[path] = endpoint

    def cert_only_for(self, account: str | None) -> bool:
        """True when the certificate alone suffices for ``account`` (or globally for None)."""
        if account is None:
            return self._global_cert_only
        return self._account_cert_only.get(account, self._global_cert_only)

    def _deny(self, head: RequestHead, conn: ConnContext, status: int, code: str, title: str, message: str,
              *, headers: Headers | None = None, detail: str | None = None) -> Response:
        ident = conn.identity
        extra = {"detail": detail} if detail else {}
        self._audit.record("gate", "deny", code, account=ident.account, fingerprint=ident.fingerprint,
                           client_ip=ident.client_ip, method=head.method.decode("latin-1"),
                           path=head.path[:200], **extra)
        if self._denied is not None:
            self._denied.inc()
        return error_page(head, status, code, title, message, headers=headers)

    def login_required(self, head: RequestHead, reason: str, *, clear_cookie: bool = False,
                       route: "Route | None" = None, conn: ConnContext | None = None) -> Decision:
        """The login for a request without a live session.

        A front door's ``without_session(head, conn, route)`` answer comes first (JOC's open GUI
        paths). A browser GET navigation on ``route`` whose front door serves its own login page there
        (Cockpit: ``login_page(head, conn, route)``) gets that page, forwarded without credentials;
        other browser GET navigations a 302 to certgate's login page; anything else 401 JSON
        with WWW-Authenticate. ``clear_cookie`` also expires certgate's (dead) cookie.
        """
        if self._logins is not None:
            self._logins.inc()
        extra: Headers = list(self._sessions.clear_cookie_headers()) if clear_cookie and self._sessions else []
        if route is not None and conn is not None:
            for door in self._front_doors:  # e.g. JOC's GUI files, served without a session
                hook = getattr(door, "without_session", None)
                answer = hook(head, conn, route) if hook is not None else None
                if answer is not None:
                    if extra and isinstance(answer, Forward) and answer.on_response is None:
                        answer.on_response = lambda status, headers: extra
                    return answer
        if head.method in (b"GET", b"HEAD") and head.wants_html():
            if route is not None and conn is not None and not head.upgrade:
                for door in self._front_doors:
                    page = getattr(door, "login_page", None)
                    answer = page(head, conn, route) if page is not None else None
                    if answer is not None:
                        if extra and isinstance(answer, Forward):
                            answer.on_response = lambda status, headers: extra
                        return answer
            loc = LOGIN_PATH + "?next=" + quote(safe_next(head.target), safe="/")
            return Response(302, [(b"Location", loc.encode("ascii")), (b"Cache-Control", b"no-store"),
                                  (b"Content-Type", b"text/plain; charset=utf-8")] + extra,
                            b"Login required\n")
        body = json.dumps({"error": reason, "message": "log in first", "login": LOGIN_PATH}).encode("utf-8")
        return Response(401, [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store"),
                              (b"WWW-Authenticate", b'Certgate realm="certgate"')] + extra, body)

    # ---------------------------------------------------------------- decide

    def decide(self, head: RequestHead, conn: ConnContext) -> DecisionOrDeferred:
        """The decision for one request head; see the module docstring for the order.

        Every ``Forward`` leaves here with its policy set (``proxy.gate.policy``): the body rule
        by authentication and the presence-script rewrite.
        """
        d = self._decide(head, conn)
        if type(d) is Forward:
            return self._policy.apply(d, head)
        if isinstance(d, Deferred):
            return d.addCallback(self._policy.settle, head)
        return d

    def _decide(self, head: RequestHead, conn: ConnContext) -> DecisionOrDeferred:
        if head.target[:2] == b"/.":  # the target is canonical: only "/." can be /.certgate (cheap test first)
            path = head.path
            if path.startswith(PREFIX) or path == "/.certgate":
                ep = self._endpoints.get(path)
                if ep is None:
                    return error_page(head, 404, "not-found", "Not found", f"No certgate endpoint at {path[:200]}.")
                if self._local is not None:
                    self._local.inc()
                return ep(head, conn)
        route = self._single_route or self._route_for(head.path)
        for door in self._front_doors:
            if door.matches(head, route):
                return door.decide(head, conn, route)
        if self._none_mode:
            if self._forwards is not None:
                self._forwards.inc()
            return Forward(route)
        ident = conn.identity
        if ident.presented:
            account = ident.account
            if account is None or not ident.verdict.ok:  # type: ignore[union-attr]
                return self._invalid_cert(head, conn)
            cert_only = (self._account_cert_only.get(account, self._global_cert_only)
                         if self._account_cert_only else self._global_cert_only)
            if cert_only:
                if self._access_check is not None:
                    denied = self._access_denied(head, conn, account)
                    if denied is not None:
                        return denied
                sets = self.without_session_cookie(head)
                fwd = Forward(route, account=account, set_headers=sets)
                if sets and self._sessions is not None:
                    sid = self._sessions.session_id(head)
                    if sid is not None:
                        return self._cookie_beside_certificate(head, conn, self._sessions, sid, route, fwd)
                if self._forwards is not None:
                    self._forwards.inc()
                return fwd
        return self._session_mode(head, conn, route)

    def _cookie_beside_certificate(self, head: RequestHead, conn: ConnContext, sessions: Sessions, sid: str,
                                   route: "Route", fwd: Forward) -> "Deferred[Decision]":
        """Certificate-only request that also carries a session cookie: check the session anyway.

        A cookie of a session bound to another certificate is cookie theft (AUTH-01): refused,
        and the session ends. A matching session has its proof refreshed. Otherwise ``fwd``;
        a store that cannot answer gives 503 (the cookie cannot be judged).
        """
        ident = conn.identity

        def checked(chk: Any) -> Decision:
            if not chk.ok and chk.reason == "session-cert-mismatch":
                return self._deny(head, conn, 403, "session-cert-mismatch", "Session refused",
                                  "This session belongs to another certificate. It has been ended.",
                                  headers=list(sessions.clear_cookie_headers()))
            if self._forwards is not None:
                self._forwards.inc()
            self._session_forward(head, route, sid, fwd)
            return fwd
        return self._store_guard(sessions.check(sid, ident, ident.client_ip), head, conn).addCallback(
            lambda chk: chk if isinstance(chk, Response) else checked(chk))

    def _store_guard(self, d: "Deferred[Any]", head: RequestHead, conn: ConnContext) -> "Deferred[Any]":
        """``d``, with a StoreError turned into the 503 ``session-store-unavailable`` Response."""
        def down(f: Any) -> Response:
            f.trap(StoreError)
            return self._store_down(head, conn, f.getErrorMessage())
        return d.addErrback(down)

    def _store_down(self, head: RequestHead, conn: ConnContext, error: str = "") -> Response:
        return store_unavailable(head, conn, self._audit, error, self._retry_after)

    def without_session_cookie(self, head: RequestHead) -> Headers:
        """``set_headers`` that replace the client's Cookie headers by one without certgate's cookie.

        The session token never reaches the upstream (a leaked token plus the grace window
        would be enough in want mode). Empty when the request does not carry our cookie; when
        nothing else remains the upstream gets an empty ``Cookie`` header.
        """
        prefix = self._cookie_prefix
        found = False
        for k, v in head.headers:
            if len(k) == 6 and k.lower() == b"cookie" and prefix in v:
                found = True
                break
        if not found:
            return []
        keep: list[bytes] = []
        for v in head.get_all(b"cookie"):
            for part in v.split(b";"):
                part = part.strip()
                if part and not part.startswith(prefix):
                    keep.append(part)
        return [(b"Cookie", b"; ".join(keep))]

    def _access_denied(self, head: RequestHead, conn: ConnContext, account: str | None) -> Response | None:
        ident = conn.identity
        decision = self._access_check(self._access_rules, ident.verdict, account,  # type: ignore[misc]
                                      ident.client_ip)
        if decision.allowed:
            return None
        return self._deny(head, conn, 403, "access-denied", "Access denied",
                          f"No access rule allows this certificate from {ident.client_ip}: {decision.reason}")

    def _invalid_cert(self, head: RequestHead, conn: ConnContext) -> Response:
        return self._deny(head, conn, 403, "certificate-invalid", "Certificate refused",
                          wording.certificate_refused(conn.identity), detail=conn.identity.invalid_reason)

    def _session_mode(self, head: RequestHead, conn: ConnContext, route: "Route") -> DecisionOrDeferred:
        ident = conn.identity
        sessions = self._sessions
        sid = sessions.session_id(head) if sessions is not None else None
        if sessions is None or sid is None:
            if not ident.presented and self._global_cert_only:
                return self._deny(head, conn, 403, "certificate-required", "Certificate required",
                                  wording.NO_CERTIFICATE)
            return self.login_required(head, "login-required", route=route, conn=conn)
        d = sessions.check(sid, ident, ident.client_ip)
        return self._store_guard(d, head, conn).addCallback(  # fail closed, say so, keep serving
            lambda chk: chk if isinstance(chk, Response) else self._session_checked(head, conn, sessions, route, chk))

    def _session_checked(self, head: RequestHead, conn: ConnContext, sessions: Sessions, route: "Route",
                         chk: Any) -> Decision:
        ident = conn.identity
        if not chk.ok:
            if chk.reason == "session-cert-mismatch":
                return self._deny(head, conn, 403, "session-cert-mismatch", "Session refused",
                                  "This session belongs to another certificate. It has been ended; log in "
                                  "again with your own certificate.",
                                  headers=list(sessions.clear_cookie_headers()))
            return self.login_required(head, chk.reason or "session-ended", clear_cookie=True, route=route,
                                       conn=conn)
        record = chk.record
        if ident.presented and self._access_check is not None:
            denied = self._access_denied(head, conn, record.account)
            if denied is not None:
                return denied
        if self._forwards is not None:
            self._forwards.inc()
        fwd = Forward(route, account=record.account, session_id=record.id,
                      set_headers=self.without_session_cookie(head))
        self._session_forward(head, route, record.id, fwd)
        if head.upgrade:
            fwd.on_client_data = self._client_observer(head, route, record.id)
        return fwd

    def _session_forward(self, head: RequestHead, route: "Route", session_id: str, fwd: Forward) -> None:
        """Let front doors act on a request forwarded within a session (e.g. JOC's logout ends it)."""
        for door in self._front_doors:
            hook = getattr(door, "session_forward", None)
            if hook is not None:
                hook(head, route, session_id, fwd)

    def _client_observer(self, head: RequestHead, route: "Route", session_id: str) -> Any:
        """The first front door's watcher of a tunnel's client bytes (e.g. Cockpit's logout)."""
        for door in self._front_doors:
            make = getattr(door, "client_observer", None)
            if make is not None:
                obs = make(head, route, session_id)
                if obs is not None:
                    return obs
        return None
