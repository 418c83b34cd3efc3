"""``/.certgate/webauthn``: a signed-in person adds a security key or passkey.

- GET needs a live trusted session (else 303 to the login page, back here afterwards) and
  shows the account's keys (name, added, last used) and a form to add one.
- POST needs the same session, a *fresh* proof of its certificate on this connection (a full
  TLS handshake at most ``presence_interval`` seconds ago, as for activating a long session;
  otherwise 403 with ``Connection: close``, so that reloading proves the card again), the
  CSRF token of the login page's scheme, a same-origin request, the account's password when
  ``[login] password = file``, a name (1..64 printable characters) and the registration
  response to a challenge sealed for this account and certificate (single use).
- Every addition and every refusal is audited (event ``webauthn``); names are escaped on the
  page (HTML) and in the audit (JSON).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred, inlineCallbacks

from proxy.gate.sameorigin import REFERRER_POLICY
from proxy.login.keys import derive_key
from proxy.login.pages import _SHELL, CSP, CSP_WEBAUTHN, CSS
from proxy.login.throttle import keys_for
from proxy.login.web import PRE_COOKIE, CsrfTokens, cross_site
from proxy.login.webauthn import WebAuthnError
from proxy.login.webauthn_js import options_block
from proxy.http.messages import ConnContext, Headers, Local, RequestHead, Response
from trust.escape import safe_html

if TYPE_CHECKING:  # pragma: no cover
    from proxy.login.service import LoginService

WEBAUTHN_PATH = "/.certgate/webauthn"
MAX_BODY = 20000
_FIELDS = ("csrf", "name", "password", "webauthn")
_MESSAGES = {
    "webauthn-bad-name": "Give the key a name of 1 to 64 characters.",
    "bad-password": "The password is not correct.",
    "webauthn-store-failed": "The key could not be saved. Ask your administrator.",
}
MSG_REFUSED = "The security key was not accepted. Try again."


def _e(s: object) -> str:
    return safe_html(s)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t)) if t else "never"


class EnrolPage:
    """The gate endpoint for ``/.certgate/webauthn``."""

    def __init__(self, login: "LoginService") -> None:
        self.login = login
        assert login.webauthn is not None
        self.factor = login.webauthn
        self.csrf = CsrfTokens(derive_key(login.secret, "csrf"))

    @inlineCallbacks
    def __call__(self, head: RequestHead, conn: ConnContext) -> Any:
        """A Deferred firing with the page, the answer or the ``Local`` that reads the form."""
        if head.method not in (b"GET", b"HEAD", b"POST"):
            return self._page(405, "Not allowed", "<p>Use this page in your browser.</p>",
                              [(b"Allow", b"GET, POST")])
        rec = yield self._session(head, conn, fresh=False)
        if rec is None:
            return Response(303, [(b"Location", b"/.certgate/login?next=" + WEBAUTHN_PATH.encode()),
                                  (b"Cache-Control", b"no-store")], b"")
        if head.method != b"POST":
            return self.render(head, conn, rec.account)
        why = cross_site(head, conn)
        if why is not None:
            self._audit("deny", "cross-site", rec.account, conn, detail=why)
            return self._page(403, "Refused", "<p class=\"why\">This request came from another site and was "
                              "refused. Open the page directly.</p>")
        return Local(self._post, max_body=MAX_BODY)

    # ------------------------------------------------------------------ session

    @inlineCallbacks
    def _session(self, head: RequestHead, conn: ConnContext, *, fresh: bool) -> Any:
        """A Deferred: the live session's record, False (a fresh proof is needed) or None."""
        sessions = self.login.sessions
        sid = sessions.session_id(head)
        if sid is None:
            return None
        chk = yield (sessions.fresh_proof(sid, conn.identity) if fresh
                     else sessions.check(sid, conn.identity, conn.identity.client_ip))
        return chk.record if chk.ok else (False if chk.reason == "fresh-proof-required" else None)

    # ------------------------------------------------------------------ rendering

    def _page(self, status: int, title: str, body: str, headers: Headers | None = None, close: bool = False
              ) -> Response:
        csp = CSP_WEBAUTHN if 'id="webauthn-options"' in body else CSP
        hs: Headers = [(b"Content-Type", b"text/html; charset=utf-8"), (b"Cache-Control", b"no-store"),
                       (b"Content-Security-Policy", csp), (b"X-Frame-Options", b"DENY"),
                       (b"Referrer-Policy", REFERRER_POLICY), (b"X-Content-Type-Options", b"nosniff")]
        text = _SHELL.format(title=_e(title), css=CSS, body=body)
        return Response(status, hs + (headers or []), text.encode("utf-8"), close=close)

    def render(self, head: RequestHead, conn: ConnContext, account: str, *, status: int = 200,
               message: str | None = None, notice: str | None = None) -> Response:
        """The account's keys and the form that adds one (a fresh registration challenge)."""
        hs: Headers = []
        cookie = head.cookie(PRE_COOKIE)
        if not self.csrf.valid_cookie_value(cookie):
            cookie = self.csrf.new_cookie_value()
            hs.append(self.csrf.cookie_header(cookie))
        creds = self.factor.credentials(account)
        parts = [f'<p>Account <strong id="account">{_e(account)}</strong></p>']
        if notice:
            parts.append(f'<p class="cert" role="status" id="notice">{_e(notice)}</p>')
        if message:
            parts.append(f'<p class="why" role="alert" id="msg">{_e(message)}</p>')
        if creds:
            rows = "".join(f"<tr><td>{_e(c.name)}</td><td>{_when(c.created)}</td><td>{_when(c.last_used)}</td></tr>"
                           for c in creds)
            parts.append(f'<table id="keys"><tr><th>Key</th><th>Added</th><th>Last used</th></tr>{rows}</table>')
        else:
            parts.append('<p id="keys">No security key yet.</p>')
        opts = self.factor.registration_options(account, conn.identity.fingerprint or "", self.login.clock.seconds())
        pw = ""
        if self._needs_password():
            pw = ('<label for="password">Your password</label>'
                  '<input id="password" name="password" type="password" required autocomplete="current-password">')
        parts.append('<h2>Add a security key or passkey</h2>'
                     f'<form method="post" action="{WEBAUTHN_PATH}">'
                     f'<input type="hidden" name="csrf" value="{_e(self.csrf.token(cookie or ""))}">'
                     '<label for="name">Name of the key</label>'
                     '<input id="name" name="name" type="text" required maxlength="64" placeholder="e.g. blue key">'
                     f'{pw}<input type="hidden" name="webauthn" value="">'
                     '<button type="button" id="webauthn-go">Add security key</button>'
                     '<p id="webauthn-status" role="status"></p>' + options_block(opts, "create") + "</form>")
        return self._page(status, "Security keys", "\n".join(parts), hs)

    def _needs_password(self) -> bool:
        return self.login.passwords is not None and getattr(self.login, "_mode", "") == "file"

    # ------------------------------------------------------------------ submit

    @inlineCallbacks
    def _post(self, head: RequestHead, body: bytes, conn: ConnContext) -> Any:
        rec = yield self._session(head, conn, fresh=True)
        if rec is False:
            return self._page(403, "Prove your certificate again",
                              '<p class="why" role="alert" id="msg">Adding a key needs a fresh proof of your '
                              f'certificate. <a href="{WEBAUTHN_PATH}">Reload this page</a> and try again.</p>',
                              close=True)
        if rec is None:
            return Response(303, [(b"Location", b"/.certgate/login?next=" + WEBAUTHN_PATH.encode())], b"")
        account = rec.account
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=len(_FIELDS) + 2)
        except (UnicodeDecodeError, ValueError):
            return self.render(head, conn, account, status=400, message="The form could not be read.")
        if any(len(v) != 1 for v in form.values()):
            return self.render(head, conn, account, status=400, message="A form field was repeated.")
        f = {k: v[0] for k, v in form.items() if k in _FIELDS}
        if not self.csrf.check(head.cookie(PRE_COOKIE), f.get("csrf")):
            self._audit("deny", "csrf-token", account, conn)
            return self.render(head, conn, account, status=403, message="This form has expired. Please try again.")
        login, ident = self.login, conn.identity
        keys = keys_for(account, ident.fingerprint, ident.client_ip)
        state = yield login.throttle.check(keys, login.clock.seconds())
        if state.blocked:
            self._audit("deny", "throttled", account, conn)
            return self.render(head, conn, account, status=429, message="Too many failed attempts. Try again later.")
        if not self._needs_password():
            return (yield self._register(head, conn, account, f, True))
        password = f.get("password") or ""
        if login._defer_to_thread is None:
            return (yield self._register(head, conn, account, f, login._check_password(account, password)))
        ok = yield login._defer_to_thread(login._check_password, account, password)
        return (yield self._register(head, conn, account, f, ok))

    @inlineCallbacks
    def _register(self, head: RequestHead, conn: ConnContext, account: str, f: dict[str, str],
                  pw_ok: Any) -> Any:
        login, ident = self.login, conn.identity
        keys = keys_for(account, ident.fingerprint, ident.client_ip)
        if pw_ok is not True:
            yield login.throttle.fail(keys, login.clock.seconds())
            self._audit("deny", "bad-password", account, conn)
            return self.render(head, conn, account, status=401, message=_MESSAGES["bad-password"])
        now = login.clock.seconds()

        try:
            cred = yield self.factor.register(account, ident.fingerprint, f.get("webauthn") or "", f.get("name", ""),
                                              now, {"fingerprint": ident.fingerprint, "client_ip": ident.client_ip})
        except WebAuthnError as e:
            yield login.throttle.fail(keys, now)
            return self.render(head, conn, account, status=400, message=_MESSAGES.get(e.reason, MSG_REFUSED))
        return self.render(head, conn, account, notice=f"Key \u201c{cred.name}\u201d added. You can log in with it.")

    def _audit(self, decision: str, reason: str, account: str, conn: ConnContext, **extra: Any) -> None:
        self.login.audit.record("webauthn", decision, reason, account=account, fingerprint=conn.identity.fingerprint,
                                client_ip=conn.identity.client_ip, **extra)
