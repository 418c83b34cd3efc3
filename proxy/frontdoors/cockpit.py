"""The Cockpit front door: certgate answers Cockpit's own login request before cockpit-ws does.

Cockpit's login page (``login.js``) sends ``GET <UrlRoot>cockpit/login`` with
``Authorization: Basic base64(user:password)``. certgate:

1. refuses unless the user equals the account of the connection's certificate (exact,
   ``trust.mapping.account_matches``; the LoginService checks it with throttling and audit):
   cockpit-ws never sees a refused request;
2. checks the factors it can (:meth:`LoginService.authenticate_async`): the password with
   ``[login] password = file``, nothing else yet with ``upstream``;
3. asks for a TOTP code when the rules need one with Cockpit's own conversation:
   ``401`` + ``WWW-Authenticate: X-Conversation <nonce> <base64(prompt)>`` + the JSON body
   cockpit 287 sends (``{"command": "authorize", "echo": false}``); the page shows the prompt and
   answers ``Authorization: X-Conversation <nonce> <base64(code)>``. The state (account,
   fingerprint, receipt, the pending password in ``basic`` mode) stays in this process, keyed
   by nonce, for ``[login] response_timeout`` seconds, and is used once;
3b. cannot ask for a security key (X-Conversation carries text only): when the rules need
   ``webauthn`` the login starts on certgate's page instead: a navigation to Cockpit's login
   page (the UrlRoot or any deep path without a session) by a certificate whose account needs
   its key is sent to ``/.certgate/login?next=...`` (303), and a password typed into Cockpit's
   form for such an account anyway is refused with a 403
   whose words (login.js shows them) point there. With the session certgate's page opened,
   ``bearer`` mode then enters Cockpit with an assertion (below, "Without Authorization");
4. lets cockpit-ws in: ``[cockpit] mode = bearer`` replaces ``Authorization`` with
   ``Bearer <assertion>`` (:mod:`proxy.frontdoors.assertion`, checked by ``certgate
   cockpit-auth``); ``basic`` forwards the Basic credentials so PAM checks the password;
5. on cockpit-ws's ``200`` opens certgate's trusted session and adds its ``Set-Cookie``
   (with ``password = upstream`` the password counts as proven only then).

The door decides on the canonical path (``proxy.paths``). It also claims the login path
spelt with other letter case or a trailing ``/`` and answers those ``404`` itself.

Without ``Authorization``, ``GET .../cockpit/login`` (the page's automatic login) is answered
``401`` locally, unless a live certgate session (or a certificate-only rule) lets ``bearer``
mode log in to cockpit-ws with a fresh assertion. Before login, only Cockpit's login page is
reachable (:meth:`CockpitFrontDoor.is_open_path`: the UrlRoot itself, ``cockpit/static/*``,
``favicon.ico``, GET/HEAD, no certgate cookie), forwarded without ``Authorization`` and without
cockpit's own cookies, so cockpit-ws always answers its login page. Everything else goes
through the gate's session check; a browser navigation it finds without a live session gets
Cockpit's login page at that path the same way (:meth:`CockpitFrontDoor.login_page`).

Parts: the answers and challenge login.js reads are spelt in :mod:`proxy.frontdoors.cockpit_wire`
(pure); pending prompts are kept by :mod:`proxy.frontdoors.conversations`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import inlineCallbacks

from proxy.frontdoors.access import access_refusal
from proxy.frontdoors import cockpit_wire as wire
from proxy.frontdoors.assertion import assertion_key, mint_assertion
from proxy.frontdoors.conversations import MAX_CONVERSATIONS, PER_CERTIFICATE, Conversation, SharedConversations
from proxy.frontdoors.wsframes import LogoutWatcher
from proxy.login.keys import derive_key
from proxy.http.messages import ConnContext, Forward, Headers, RequestHead, Response
from proxy.paths import loose_path
from proxy.stores.interface import LimitReached, StoreError

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock
    from proxy.interfaces import AuditSink, Sessions, SessionStore
    from twisted.internet.defer import Deferred

    from proxy.config import Config, Route
    from proxy.login.outcome import AuthOutcome
    from proxy.login.service import LoginService

USE_KEY = "This account logs in with a security key: open /.certgate/login"
_APP_LOGIN = re.compile(r"^cockpit\+[^/]+/login$")


def config_problems(config: "Config") -> list[Any]:
    """Problems of a config the Cockpit front door cannot serve (``trust.problems.Problem`` list).

    ``mode = bearer`` with ``[login] password = upstream`` cannot verify a password (cockpit-ws
    never sees it), so a rule (default or ``[account:*]``) that needs ``password`` is refused.
    """
    from trust.problems import Problem

    if config.cockpit.mode != "bearer" or config.login.password != "upstream":
        return []
    rules = [("login", config.login.required_auth_methods)]
    rules += [(f"account:{a}", r) for a, r in config.account_rules.items()]
    bad = [sec for sec, rs in rules if any("password" in r for r in rs)]
    if not bad:
        return []
    return [Problem("cockpit", "mode", "bearer mode cannot check passwords with [login] password = upstream "
                    f"(cockpit-ws never sees the password) but {', '.join('[' + b + ']' for b in bad)} "
                    "require password: set [login] password = file, or [cockpit] mode = basic")]


class CockpitFrontDoor:
    """See the module docstring. Built by ``proxy.app.service`` for routes of kind ``cockpit``."""

    def __init__(self, *, config: "Config", login: "LoginService", sessions: Sessions, store: SessionStore,
                 clock: Clock, audit: AuditSink, nonce: Callable[[], str] | None = None) -> None:
        problems = config_problems(config)
        if problems:
            from proxy.config import ConfigError

            raise ConfigError(problems)
        self._config = config
        self._login = login
        self._sessions = sessions
        self._store = store
        self._clock = clock
        self._audit = audit
        self.mode: str = config.cockpit.mode
        self.root = wire.normalize_root(config.cockpit.url_root)
        self._lifetime = float(config.cockpit.assertion_lifetime)
        self._cookie_name = str(config.sessions.cookie_name).encode("ascii")
        self._response_timeout = float(config.login.response_timeout)
        self._key = assertion_key(login.secret)
        self._nonce = nonce or (lambda: secrets.token_urlsafe(18))
        # pending prompts live in the shared store: any worker of any gateway continues the login
        self.conversations = SharedConversations(store, derive_key(login.secret, "cockpit-conversation"),
                                                 clock.seconds, limit=MAX_CONVERSATIONS,
                                                 per_certificate=PER_CERTIFICATE)

    # ------------------------------------------------------------------ matching

    def _rel(self, path: str, root: str | None = None) -> str | None:
        root = self.root if root is None else root
        if path == root.rstrip("/") and root != "/":
            return ""
        return path[len(root):] if path.startswith(root) else None

    def is_login_path(self, path: str) -> bool:
        """``<UrlRoot>cockpit/login`` or ``<UrlRoot>cockpit+APP/login`` (canonical path, exact)."""
        rel = self._rel(path)
        return rel is not None and (rel == "cockpit/login" or bool(_APP_LOGIN.match(rel)))

    def is_login_variant(self, path: str) -> bool:
        """A login path spelt with other letter case or a trailing ``/`` (cockpit-ws 287 routes
        neither to its login, but the door claims them so no spelling reaches it unchecked)."""
        rel = self._rel(loose_path(path), self.root.lower())
        return rel is not None and (rel == "cockpit/login" or bool(_APP_LOGIN.match(rel)))

    def is_open_path(self, path: str) -> bool:
        """The paths of Cockpit's login page: the UrlRoot, ``cockpit/static/*``, ``favicon.ico``."""
        rel = self._rel(path)
        if rel is None or ".." in rel.split("/"):
            return False
        return rel == "" or rel == "favicon.ico" or (rel.startswith("cockpit/static/") and len(rel) > 15)

    def matches(self, head: RequestHead, route: "Route") -> bool:
        """Cockpit routes only: the login path always; the login page's paths without a session cookie."""
        if route.kind != "cockpit":
            return False
        path = head.path
        if self.is_login_variant(path):  # the exact login path is one of its spellings
            return True
        return (head.method in (b"GET", b"HEAD") and self.is_open_path(path)
                and self._sessions.session_id(head) is None)

    # ------------------------------------------------------------------ decide

    def decide(self, head: RequestHead, conn: ConnContext, route: "Route") -> "Response | Forward | Deferred[Any]":
        """The decision for a matched request (see the module docstring)."""
        why = access_refusal(self._config, conn)
        if why is not None:
            return self._refuse(conn, conn.identity.account, 403, "access-denied", "Access denied", detail=why)
        if not self.is_login_path(head.path):
            if self.is_login_variant(head.path):
                return self._refuse(conn, None, 404, "login-path-variant", "Not Found")
            to_key = self._key_login(head, conn)
            return to_key if to_key is not None else self._open_page(head, route)
        if head.method not in (b"GET", b"HEAD"):
            return self._refuse(conn, None, 405, "method-not-allowed", "Method Not Allowed")
        values = head.get_all(b"authorization")
        if len(values) > 1:
            return self._refuse(conn, None, 401, "authorization-repeated", "Authentication failed")
        if not values:
            return self._no_credentials(head, conn, route)
        value = values[0].decode("latin-1")
        scheme, _, rest = value.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            creds = wire.decode_basic(rest)
            if creds is None:
                return self._refuse(conn, None, 401, "basic-malformed", "Authentication failed")
            return self._basic(head, conn, route, creds[0], creds[1])
        if scheme == "x-conversation":
            return self._conversation_answer(head, conn, route, rest)
        return self._refuse(conn, None, 401, "scheme-refused", "Authentication failed", scheme=scheme[:20])

    def login_page(self, head: RequestHead, conn: ConnContext, route: "Route") -> "Response | Forward | None":
        """For the gate, when a browser navigation has no live certgate session: Cockpit's own
        login page at the path asked for (cockpit-ws serves it at any path under its UrlRoot to a
        request without credentials), or None outside this door's routes.

        So Cockpit's Logout lands on Cockpit's "Logout successful" page and a bookmark to a deep
        path shows Cockpit's login there: one login, by Cockpit's form through this front door,
        after which Cockpit reloads that path. Nothing that authenticates reaches cockpit-ws
        (no ``Authorization``, no cockpit or certgate cookie). The ``[access:*]`` rules apply as
        for the login page itself (403).
        """
        if route.kind != "cockpit" or head.method not in (b"GET", b"HEAD") or head.upgrade:
            return None
        rel = self._rel(head.path)
        if rel is None or ".." in rel.split("/") or self.is_login_variant(head.path):
            return None
        why = access_refusal(self._config, conn)
        if why is not None:
            return self._refuse(conn, conn.identity.account, 403, "access-denied", "Access denied", detail=why)
        to_key = self._key_login(head, conn)
        return to_key if to_key is not None else self._open_page(head, route)

    def _key_login(self, head: RequestHead, conn: ConnContext) -> Response | None:
        """303 to certgate's login page for a navigation to Cockpit's login page by a certificate
        whose account needs its security key (Cockpit's page cannot ask for it); else None."""
        ident = conn.identity
        rel = self._rel(head.path) or ""
        if (not ident.ok or ident.account is None or not head.wants_html() or rel.startswith("cockpit/static/")
                or rel == "favicon.ico" or not self._login.needs_webauthn(ident.account)):
            return None
        from urllib.parse import quote

        from proxy.login.web import safe_next

        loc = "/.certgate/login?next=" + quote(safe_next(head.target.decode("latin-1")), safe="/")
        self._audit.record("cockpit-login", "redirect", "webauthn-on-certgate-page", account=ident.account,
                           fingerprint=ident.fingerprint, client_ip=ident.client_ip)
        return Response(303, [(b"Location", loc.encode("ascii")), (b"Cache-Control", b"no-store")], b"")

    def _open_page(self, head: RequestHead, route: "Route") -> Forward:
        """Cockpit's login page, without credentials or cockpit cookies (no session reaches cockpit-ws)."""
        sets: Headers = [(b"Authorization", b"")] if head.get(b"authorization") is not None else []
        cookies = wire.strip_cockpit_cookies(head, self._cookie_name)
        if cookies is not None:
            sets.append((b"Cookie", cookies))
        return Forward(route, set_headers=sets)

    # ------------------------------------------------------------------ answers

    def _refuse(self, conn: ConnContext, account: str | None, status: int, reason: str, message: str,
                headers: Headers | None = None, **extra: Any) -> Response:
        """A local refusal, audited. ``message`` becomes the reason phrase login.js shows for 403."""
        ident = conn.identity
        self._audit.record("cockpit-login", "deny", reason, account=account, fingerprint=ident.fingerprint,
                           client_ip=ident.client_ip, **extra)
        return wire.answer(status, reason, message, headers)

    # ------------------------------------------------------------------ no Authorization

    @inlineCallbacks
    def _no_credentials(self, head: RequestHead, conn: ConnContext, route: "Route") -> Any:
        ident = conn.identity
        sid = self._sessions.session_id(head)
        clear: Headers = []
        if sid is not None:
            chk = yield self._sessions.check(sid, ident, ident.client_ip)
            if not chk.ok:
                clear = list(self._sessions.clear_cookie_headers())  # a dead session: forget its cookie
            else:
                rec = chk.record
                if self.mode == "bearer":
                    self._audit.record("cockpit-login", "allow", "session-assertion", account=rec.account,
                                       fingerprint=ident.fingerprint, client_ip=ident.client_ip)
                    return (yield self._to_cockpit(head, conn, route, rec.account, proven=None, receipt=None,
                                                   bearer=True, password=None))
                # basic: cockpit's cookie (if still alive) is the only way in without a password
                return Forward(route, account=rec.account, session_id=rec.id)
        if self.mode == "bearer" and ident.ok and ident.account is not None:
            if ["tls-cert"] in self._login.effective_rules(ident.account):
                out = yield self._login.authenticate(account=ident.account, conn=conn, open_session=False)
                if out.ok:
                    return (yield self._to_cockpit(head, conn, route, out.account, proven=out.proven, receipt=None,
                                                   bearer=True, password=None))
                if out.reason == "session-store-unavailable":
                    return wire.outcome_refusal(out)
        # what cockpit-ws itself answers without credentials: login.js then shows its form
        return wire.answer(401, "authentication-required", "Authentication required", clear)

    # ------------------------------------------------------------------ Basic

    def _basic(self, head: RequestHead, conn: ConnContext, route: "Route", user: str, password: str
               ) -> "Response | Deferred[Any]":
        login = self._login
        check_pw = (password or None) if login.config.login.password == "file" else None
        # MaxStartups: a slot shared by every gateway on the store; ``busy`` is answered 503
        d = login.authenticate_with_slot(account=user, conn=conn, password=check_pw, open_session=False)

        def step(out: "AuthOutcome") -> "Response | Forward":
            return self._after_first_step(head, conn, route, out, password)

        d.addCallback(step)
        return d

    def _after_first_step(self, head: RequestHead, conn: ConnContext, route: "Route", out: "AuthOutcome",
                          password: str) -> Any:
        basic = self.mode == "basic"
        if out.ok:
            return self._to_cockpit(head, conn, route, out.account, proven=out.proven, receipt=None,
                                    bearer=not basic, password=password)
        if not out.partial:
            return wire.outcome_refusal(out)
        missing = {m for rule in out.required for m in rule} - set(out.proven)
        if "webauthn" in missing and self._login.needs_webauthn(out.account):
            return self._refuse(conn, out.account, 403, "webauthn-on-certgate-page", USE_KEY)
        if "totp" in missing and self._login.needs_totp(out.account):
            return self._ask_code(head, conn, out, password if basic else None)
        if basic and missing <= {"password"}:
            # password = upstream: PAM proves it; the receipt completes the login on cockpit-ws's 200
            return self._to_cockpit(head, conn, route, out.account, proven=out.proven, receipt=out.receipt,
                                    bearer=False, password=password)
        return self._refuse(conn, out.account, 401, "factors-missing", "Authentication failed",
                            missing=sorted(missing))

    # ------------------------------------------------------------------ X-Conversation

    @inlineCallbacks
    def _ask_code(self, head: RequestHead, conn: ConnContext, out: "AuthOutcome", password: str | None) -> Any:
        ident = conn.identity
        now = self._clock.seconds()
        conv = Conversation(nonce=self._nonce(), account=out.account, fingerprint=ident.fingerprint or "",
                            receipt=out.receipt, password=password, superuser=head.get(b"x-superuser"),
                            expires_at=now + self._response_timeout)
        if not (yield self.conversations.add(conv)):
            return wire.outcome_refusal(self._login.busy_outcome(out.account, conn))
        self._audit.record("cockpit-login", "challenge", "totp-required", account=out.account,
                           fingerprint=ident.fingerprint, client_ip=ident.client_ip)
        return wire.code_challenge(conv.nonce)

    @inlineCallbacks
    def _conversation_answer(self, head: RequestHead, conn: ConnContext, route: "Route", rest: str) -> Any:
        ident = conn.identity
        nonce, _, answer = rest.strip().partition(" ")
        conv = yield self.conversations.take(nonce)
        if conv is None:
            return self._refuse(conn, None, 401, "conversation-unknown", "Invalid conversation token")
        if ident.fingerprint != conv.fingerprint or not ident.ok:
            return self._refuse(conn, conv.account, 401, "conversation-cert-mismatch", "Authentication failed")
        try:
            code = base64.b64decode(answer.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return self._refuse(conn, conv.account, 401, "conversation-malformed", "Authentication failed")
        out = yield self._login.authenticate(account=conv.account, conn=conn, totp=code, receipt=conv.receipt,
                                             open_session=False)
        basic = self.mode == "basic"
        if out.ok:
            return (yield self._to_cockpit(head, conn, route, out.account, proven=out.proven, receipt=None,
                                           bearer=not basic, password=conv.password, superuser=conv.superuser))
        if out.partial and basic and {m for r in out.required for m in r} - set(out.proven) <= {"password"}:
            return (yield self._to_cockpit(head, conn, route, out.account, proven=out.proven, receipt=out.receipt,
                                           bearer=False, password=conv.password, superuser=conv.superuser))
        return wire.outcome_refusal(out)

    # ------------------------------------------------------------------ to cockpit-ws

    @inlineCallbacks
    def _to_cockpit(self, head: RequestHead, conn: ConnContext, route: "Route", account: str, *,
                    proven: frozenset[str] | None, receipt: str | None, bearer: bool, password: str | None,
                    superuser: bytes | None = None) -> Any:
        """Forward the login to cockpit-ws with the right credentials; a Deferred (Forward or Response).

        The session is opened in the store *before* forwarding (the store is asynchronous, the
        response hook is not); its cookie is released only on cockpit-ws's 200, otherwise the
        session is ended at once. Nobody else knows its token meanwhile.
        ``proven`` None: a live certgate session already exists (no new one is opened).
        ``receipt``: the password is still to be proven by cockpit-ws (``password = upstream``).
        """
        ident = conn.identity
        if bearer:
            token = mint_assertion(self._key, account=account, fingerprint=ident.fingerprint or "",
                                   now=self._clock.seconds(), lifetime=self._lifetime)
            auth = b"Bearer " + token.encode("ascii")
        else:
            assert password is not None
            auth = b"Basic " + base64.b64encode(f"{account}:{password}".encode("utf-8"))
        sets: Headers = [(b"Authorization", auth)]
        if superuser is not None:
            sets.append((b"X-Superuser", superuser))
        old_sid = self._sessions.session_id(head)
        via = "bearer" if bearer else "basic"
        opened: tuple[Any, Headers] | None = None
        if proven is not None:
            got = yield self._open_session(conn, account, proven, receipt)
            if isinstance(got, Response):
                return got
            opened = got

        def on_response(status: int, headers: Headers) -> Headers:
            if status != 200:
                if opened is not None:
                    _later(self._sessions.end(opened[0].id, "upstream-refused"), "end the unused session")
                self._upstream_refused(conn, account, status, via, password_at_stake=not bearer)
                return []
            if opened is None:
                return []
            if old_sid is not None:
                _later(self._sessions.end(old_sid, "replaced-by-login"), "end the replaced session")
            return opened[1]

        return Forward(route, set_headers=sets, account=account, on_response=on_response)

    def _upstream_refused(self, conn: ConnContext, account: str, status: int, via: str,
                          password_at_stake: bool) -> None:
        ident = conn.identity
        locked = None
        if password_at_stake and status == 401:  # PAM refused the password: count it like ours
            from proxy.login.throttle import ThrottleState, keys_for

            d = self._login.throttle.fail(keys_for(account, ident.fingerprint, ident.client_ip),
                                          self._clock.seconds())
            done = d.result if d.called else None
            locked = done.blocked if isinstance(done, ThrottleState) else None
            _later(d, "count the refused password")
        self._audit.record("cockpit-login", "deny", "upstream-refused", account=account,
                           fingerprint=ident.fingerprint, client_ip=ident.client_ip, status=status, via=via,
                           locked=locked)

    @inlineCallbacks
    def _open_session(self, conn: ConnContext, account: str, proven: frozenset[str], receipt: str | None) -> Any:
        """The opened (record, cookies), or the refusal Response (store down, session limit, receipt)."""
        from proxy.login.service import MSG_LIMIT, MSG_STORE

        ident = conn.identity
        if receipt is not None:
            out = yield self._login.authenticate(account=account, conn=conn, receipt=receipt,
                                                 password_proven_upstream=True, open_session=True)
            if not out.ok:
                return wire.outcome_refusal(out)
            return (out.session, list(out.set_cookie))
        methods = sorted(proven | ({"password"} if self.mode == "basic" else set()))
        try:
            rec, cookies = yield self._sessions.open(ident, account, methods, ident.client_ip)
        except LimitReached:
            return wire.answer(403, "session-limit", MSG_LIMIT)
        except StoreError as e:
            self._audit.record("cockpit-login", "error", "session-open-failed", account=account,
                               fingerprint=ident.fingerprint, client_ip=ident.client_ip, error=str(e)[:200])
            return wire.answer(503, "session-store-unavailable", MSG_STORE,
                               [(b"Retry-After", str(self._login.retry_after).encode("ascii"))])
        self._audit.record("cockpit-login", "allow", "ok", account=account, fingerprint=ident.fingerprint,
                           client_ip=ident.client_ip, methods=methods)
        return (rec, cookies)

    # ------------------------------------------------------------------ logout

    def logout_watcher(self, session_id: str) -> LogoutWatcher:
        """A watcher for the client -> cockpit-ws bytes of a ``/cockpit/socket`` tunnel of
        ``session_id``: Cockpit's logout control message ends the certgate session."""

        def ended() -> None:
            self._audit.record("cockpit-login", "logout", "cockpit-logout", session=session_id[:16])
            _later(self._sessions.end(session_id, "cockpit-logout"), "end the session at Cockpit's logout")

        return LogoutWatcher(ended)

    def client_observer(self, head: RequestHead, route: "Route", session_id: str | None
                        ) -> Callable[[bytes], None] | None:
        """The proposed tunnel hook: for a ``/cockpit/socket`` upgrade of a certgate session on a
        Cockpit route, a callable to receive every client -> cockpit-ws byte of the tunnel (it
        never changes them); None for anything else."""
        if session_id is None or route.kind != "cockpit" or not self.is_socket_path(head.path):
            return None
        return self.logout_watcher(session_id).feed

    def is_socket_path(self, path: str) -> bool:
        """``<UrlRoot>cockpit/socket`` (and ``cockpit+APP/socket``): the tunnels to watch."""
        rel = self._rel(path)
        return rel is not None and (rel == "cockpit/socket" or bool(re.match(r"^cockpit\+[^/]+/socket$", rel)))


def _later(d: Any, what: str) -> None:
    """Let ``d`` finish on its own; a failure is logged (the response is already on its way)."""
    from twisted.logger import Logger

    d.addErrback(lambda f: Logger().warn("cockpit front door: cannot {what}: {err}", what=what,
                                         err=f.getErrorMessage()))
