"""certgate's own HTML login page at ``/.certgate/login`` (GET shows it, POST submits it).

- One account field, prefilled with the account of the connection's certificate; the
  certificate's subject and expiry are shown; a missing or refused certificate is explained in
  plain words (:mod:`proxy.gate.wording`, the same sentences as every other certgate page) and no
  form is offered (the login could not succeed).
- Step 1 asks for the account and the first factor (the password when a rule needs one);
  step 2, after a partial success, only for what is missing (the account shown, read-only).
- CSRF: a pre-auth cookie (``__Host-certgate-pre``, random, ``SameSite=Strict``) and a
  per-page token ``HMAC(key, cookie)`` in a hidden field; the POST needs both, plus
  ``Sec-Fetch-Site``/``Origin`` that are not cross-site (:mod:`proxy.gate.sameorigin`). The page
  sends ``Referrer-Policy: same-origin`` so browsers post it with its real ``Origin``.
- WebAuthn: when the step needs the ``webauthn`` factor the page carries request options
  bound to the account and certificate and one script (:mod:`proxy.login.webauthn_js`,
  allowed by its hash) that asks the key and submits the form; no other script. A strict CSP
  (``default-src 'none'``, the one stylesheet allowed by hash, ``form-action 'self'``,
  ``frame-ancestors 'none'``).
- Success: 303 to ``next`` (same-origin paths only) with the session cookie; a partial
  success shows step 2 (only the missing fields, the receipt in a hidden field).
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from proxy.gate import wording
from proxy.login import factors
from proxy.login.keys import derive_key
from proxy.login.outcome import AuthOutcome
from proxy.login.web import PRE_COOKIE, CsrfTokens, cross_site, safe_next
from proxy.login.webauthn_js import SCRIPT_SRC, options_block
from proxy.http.messages import ConnContext, Headers, Local, RequestHead, Response
from proxy.gate.sameorigin import REFERRER_POLICY
from trust.escape import safe_html

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred

    from proxy.login.service import LoginService

MAX_BODY = 16384
_FIELDS = ("account", "password", "totp", "webauthn", "receipt", "next", "csrf")

CSS = ("body{font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em;color:#222}"
       "h1{font-size:1.4em}label{display:block;margin-top:1em;font-weight:600}"
       "input{display:block;width:100%;box-sizing:border-box;padding:.5em;font-size:1em}"
       "button{margin-top:1.5em;padding:.6em 1.4em;font-size:1em}"
       ".cert{background:#f3f6f9;border-left:4px solid #369;padding:.5em .8em}"
       ".why{background:#fdf3f3;border-left:4px solid #c33;padding:.5em .8em}"
       "dt{font-weight:600}dd{margin:0 0 .4em 0;word-break:break-all}"
       "table{border-collapse:collapse;margin-top:1em}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;"
       "text-align:left}")
CSP = ("default-src 'none'; style-src 'sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
       + "'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'").encode("ascii")
#: the same policy plus the one WebAuthn script, allowed by its hash
CSP_WEBAUTHN = CSP.replace(b"; form-action", b"; script-src " + SCRIPT_SRC.encode("ascii") + b"; form-action")

_SHELL = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - certgate</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<style>{css}</style></head>
<body><main><h1>{title}</h1>
{body}</main></body></html>
"""


def _e(s: object) -> str:
    return safe_html(s)


LOGIN_PATH = "/.certgate/login"


def _login_link(next_path: str) -> str:
    return LOGIN_PATH + ("?next=" + quote(next_path, safe="/") if next_path and next_path != "/" else "")


def first_step(rules: list[list[str]]) -> list[str]:
    """The factor step 1 asks for: the password when a rule needs one, else the security key or
    the code (never two: a rule needing more gets the rest in step 2, after this was checked)."""
    methods = factors.methods_in(rules)
    if factors.PASSWORD in methods:
        return [factors.PASSWORD]
    if factors.WEBAUTHN in methods:
        return [factors.WEBAUTHN] + ([factors.TOTP] if factors.TOTP in methods else [])
    return [factors.TOTP] if factors.TOTP in methods else []


def step_two_message(o: AuthOutcome) -> str:
    """What step 2 tells the person, naming what was accepted and what is missing."""
    need = factors.missing(o.required, o.proven)
    done = "Password accepted. " if factors.PASSWORD in o.proven else ""
    if need == [factors.TOTP]:
        return done + "Enter the code from your authenticator app to finish logging in."
    if need == [factors.WEBAUTHN]:
        return done + "Use your security key to finish logging in."
    if factors.WEBAUTHN in need:
        return done + "Use your security key, or enter the code from your authenticator app, to finish logging in."
    if need == [factors.PASSWORD]:
        return done + "Enter your password to finish logging in."
    return done + "Enter the remaining factor to finish logging in."


def _expiry(conn: ConnContext) -> str | None:
    """The certificate's notAfter from the verdict (or the leaf), as ``YYYY-MM-DD HH:MM UTC``."""
    ident = conn.identity
    when = getattr(ident.verdict, "not_after", None)
    if when is None and ident.leaf is not None:
        when = ident.leaf.not_valid_after_utc
    return when.strftime("%Y-%m-%d %H:%M UTC") if when is not None else None


class LoginPage:
    """The gate endpoint for ``/.certgate/login``."""

    def __init__(self, login: "LoginService") -> None:
        self.login = login
        self.csrf = CsrfTokens(derive_key(login.secret, "csrf"))

    # ------------------------------------------------------------------ dispatch

    def __call__(self, head: RequestHead, conn: ConnContext) -> Response | Local:
        if head.method in (b"GET", b"HEAD"):
            nxt = safe_next((parse_qs(head.query).get("next") or [""])[0])
            return self.render(head, conn, next_path=nxt)
        if head.method != b"POST":
            return self._refused(405, "Use the login form.", [(b"Allow", b"GET, POST")])
        why = cross_site(head, conn)
        if why is not None:
            self.login.audit.record("login", "deny", "cross-site", fingerprint=conn.identity.fingerprint,
                                    client_ip=conn.identity.client_ip, detail=why)
            return self._refused(403, "This login request came from another site and was refused. Open the login "
                                 "page directly.")
        return Local(self._post, max_body=MAX_BODY)

    # ------------------------------------------------------------------ rendering

    def _refused(self, status: int, text: str, headers: Headers | None = None) -> Response:
        """A refusal before the form could be handled: plain words and a way back to the login."""
        return self._page(status, "Login refused", f'<p class="why" role="alert">{_e(text)}</p>'
                          f'<p><a href="{LOGIN_PATH}">Back to the login page</a></p>', headers)

    def _page(self, status: int, title: str, body: str, headers: Headers | None = None) -> Response:
        csp = CSP_WEBAUTHN if 'id="webauthn-options"' in body else CSP
        hs: Headers = [(b"Content-Type", b"text/html; charset=utf-8"), (b"Cache-Control", b"no-store"),
                       (b"Content-Security-Policy", csp), (b"X-Frame-Options", b"DENY"),
                       (b"Referrer-Policy", REFERRER_POLICY), (b"X-Content-Type-Options", b"nosniff")]
        text = _SHELL.format(title=_e(title), css=CSS, body=body)
        return Response(status, hs + (headers or []), text.encode("utf-8"))

    def _cert_box(self, conn: ConnContext) -> str:
        """The certificate the browser presented, or why there is a problem with it (plain words)."""
        ident = conn.identity
        problem = wording.certificate_problem(ident)
        if problem is not None:
            box = f'<p class="why" role="alert" id="cert-problem">{_e(problem)}</p>'
            if ident.presented:
                box += ('<dl class="cert" aria-label="The certificate your browser presented">'
                        f'<dt>Certificate</dt><dd>{_e(ident.subject or "-")}</dd>'
                        f'<dt>Issued by</dt><dd>{_e(ident.issuer or "-")}</dd></dl>')
            return box
        exp = _expiry(conn)
        return ('<dl class="cert" aria-label="Your certificate">'
                f'<dt>Certificate</dt><dd>{_e(ident.subject or "-")}</dd>'
                + (f"<dt>Valid until</dt><dd>{_e(exp)}</dd>" if exp else "") + "</dl>")

    def render(self, head: RequestHead, conn: ConnContext, *, next_path: str = "/", status: int = 200,
               message: str | None = None, outcome: AuthOutcome | None = None, account: str | None = None,
               headers: Headers | None = None) -> Response:
        """The login page: step 1 (account and the first factor), or step 2 when ``outcome`` is a
        partial success (only the missing factor; the account shown, not editable)."""
        hs: Headers = list(headers or [])
        cookie = head.cookie(PRE_COOKIE)
        if not self.csrf.valid_cookie_value(cookie):
            cookie = self.csrf.new_cookie_value()
            hs.append(self.csrf.cookie_header(cookie))
        token = self.csrf.token(cookie or "")
        ident = conn.identity
        parts = [self._cert_box(conn)]
        if message:
            parts.append(f'<p class="why" role="alert" id="msg">{_e(message)}</p>')
        if ident.ok:
            acct = account if account is not None else str(ident.account)
            if outcome is not None and outcome.partial:
                need = factors.missing(outcome.required, outcome.proven)
                title = "Log in: one more step"
                options = outcome.webauthn_options if factors.WEBAUTHN in need else None
                fields = self._fields(need, acct, readonly=True, key=options is not None)
                fields += f'<input type="hidden" name="receipt" value="{_e(outcome.receipt)}">'
            else:
                rules = self.login.effective_rules(acct) or self.login.required_methods(acct)
                title = "Log in"
                need = first_step(rules)
                options = self.login.webauthn_options(acct, conn) if factors.WEBAUTHN in need else None
                fields = self._fields(need, acct, readonly=False, key=options is not None)
            submit = '<button type="submit">Log in</button>'
            if options is not None:
                submit = ('<button type="button" id="webauthn-go">Use security key</button>'
                          '<p id="webauthn-status" role="status"></p>' + options_block(options, "get"))
                if factors.TOTP in need:
                    submit += '<button type="submit">Log in with the code</button>'
            parts.append('<form method="post" action="/.certgate/login" autocomplete="on">'
                         f'<input type="hidden" name="csrf" value="{_e(token)}">'
                         f'<input type="hidden" name="next" value="{_e(next_path)}">'
                         f'{fields}{submit}</form>')
        else:
            title = "Certificate required" if not ident.presented else "Certificate refused"
            parts.append(f'<p><a href="{_e(_login_link(next_path))}">Try again</a> after choosing a certificate.</p>')
        return self._page(status, title, "\n".join(parts), hs)

    @staticmethod
    def _fields(methods: list[str] | Any, account: str, *, readonly: bool, key: bool = False) -> str:
        ro = " readonly" if readonly else ""
        out = ('<label for="account">Account</label>'
               f'<input id="account" name="account" type="text" value="{_e(account)}" required '
               f'autocomplete="username" autocapitalize="none" spellcheck="false"{ro}>')
        if factors.PASSWORD in methods:
            out += ('<label for="password">Password</label>'
                    '<input id="password" name="password" type="password" required autocomplete="current-password">')
        if factors.TOTP in methods:
            req = "" if key else " required"  # the key or the code
            out += ('<label for="totp">Code from your authenticator app</label>'
                    '<input id="totp" name="totp" type="text" inputmode="numeric" pattern="[0-9]{6}" '
                    f'maxlength="6"{req} autocomplete="one-time-code" aria-describedby="totp-help">'
                    '<small id="totp-help">Six digits.</small>')
        if key:
            out += '<input type="hidden" name="webauthn" value="">'
        return out

    # ------------------------------------------------------------------ submit

    def _post(self, head: RequestHead, body: bytes, conn: ConnContext) -> "Response | Deferred[Response]":
        ctype = (head.get(b"content-type") or b"").split(b";", 1)[0].strip().lower()
        if ctype != b"application/x-www-form-urlencoded":
            return self._refused(415, "Submit the login form.")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                            max_num_fields=len(_FIELDS) + 2)
        except (UnicodeDecodeError, ValueError):
            return self._refused(400, "The form could not be read.")
        if any(len(v) != 1 for v in form.values()):
            return self._refused(400, "A form field was repeated.")
        f = {k: v[0] for k, v in form.items() if k in _FIELDS}
        nxt = safe_next(f.get("next"))
        if not self.csrf.check(head.cookie(PRE_COOKIE), f.get("csrf")):
            self.login.audit.record("login", "deny", "csrf-token", fingerprint=conn.identity.fingerprint,
                                    client_ip=conn.identity.client_ip)
            return self.render(head, conn, next_path=nxt, status=403,
                               message="This login form has expired or was opened elsewhere. Please try again.")
        account = f.get("account") or ""
        login = self.login
        d = login.authenticate_with_slot(account=account, conn=conn, password=f.get("password") or None,
                                         totp=f.get("totp") or None, receipt=f.get("receipt") or None,
                                         webauthn=f.get("webauthn") or None)
        return d.addCallback(lambda o: self._answer(head, conn, o, nxt, account))

    def _answer(self, head: RequestHead, conn: ConnContext, o: AuthOutcome, nxt: str, account: str) -> Response:
        if o.ok:
            hs: Headers = [(b"Location", nxt.encode("utf-8")), (b"Cache-Control", b"no-store"),
                           (b"Content-Type", b"text/plain; charset=utf-8"), self.csrf.clear_header()]
            return Response(303, hs + list(o.set_cookie), b"Logged in\n")
        if o.partial:
            return self.render(head, conn, next_path=nxt, status=401, outcome=o, account=o.account,
                               message=step_two_message(o))
        if o.reason == "throttled":
            return self.render(head, conn, next_path=nxt, status=429, message=o.public_message,
                               headers=[(b"Retry-After", str(o.retry_after).encode())])
        if o.reason == "busy":
            return self.render(head, conn, next_path=nxt, status=503, message=o.public_message,
                               headers=[(b"Retry-After", b"1")])
        if o.reason == "session-store-unavailable":
            return self.render(head, conn, next_path=nxt, status=503, message=o.public_message,
                               headers=[(b"Retry-After", str(o.retry_after).encode())])
        if o.reason == "session-limit":
            return self.render(head, conn, next_path=nxt, status=403, message=o.public_message)
        return self.render(head, conn, next_path=nxt, status=401, message=o.public_message,
                           account=account if conn.identity.ok else None)
