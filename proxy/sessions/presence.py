"""certgate's own session endpoints, the presence script, and optional HTML injection.

Endpoints (mount with :func:`session_endpoints`; all answers are ``no-store``):

- ``GET /.certgate/presence`` — checks the session like any request (so a request on a fresh
  full handshake with the card in re-proves it) and answers 200 JSON with the session's end
  time, or 401 JSON when the session is over. When the connection's own proof is older than
  ``presence_interval`` (or it has none) the answer says ``"fresh": false`` and carries
  ``Connection: close``: the script asks once more at once, on a new connection, i.e. a new
  handshake in which the browser presents the certificate again. (The HTTP layer also closes
  idle connections at that age, so a ping rarely meets an old one.)
  ``?visible=0`` (a hidden page) proves presence but does not count as use (idle timeout).
- ``GET /.certgate/presence.js`` — the small page script (no session needed): pings every
  ``presence_interval`` seconds from the top window only, and at the session's announced end;
  on 401 it fires a ``certgate-session-ended`` event and sends the page to the login page
  (unless the script tag has ``data-redirect="off"``); when the gateway cannot be reached
  after that end (the card is out, so no handshake succeeds) it fires the event and covers
  the page with a notice that the certificate is needed again, linking to the login page.
  With ``data-await-session="on"`` (a single-page app's login page served before any session,
  e.g. JOC's) a 401 means "not logged in yet" until the first 200; then it behaves as above,
  except that "the login page" is that page itself (reloaded), not certgate's.
- ``POST /.certgate/logout`` — ends the session; ``GET`` shows a page with a logout button.
- ``POST /.certgate/api/trusted-session`` activates the long trusted session (needs a fresh
  certificate proof on this connection, see :meth:`SessionManager.fresh_window`);
  ``DELETE`` deactivates; ``GET`` reads the state.
- ``GET /.certgate/api/session`` — the session's account, fingerprint and times.

State-changing endpoints are CSRF-safe by the one rule of :mod:`proxy.gate.sameorigin`
(``Sec-Fetch-Site`` first, else ``Origin``); requests with neither header (scripts, curl)
pass, and the session cookie is ``SameSite=Strict`` anyway.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred

from proxy.gate import wording
from proxy.http.messages import ConnContext, Decision, Headers, RequestHead, Response
from proxy.gate.sameorigin import REFERRER_POLICY, cross_site
from trust.escape import safe_json

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock
    from proxy.interfaces import Endpoint, SessionCheck, Sessions

SCRIPT_PATH = "/.certgate/presence.js"
PRESENCE_PATH = "/.certgate/presence"
LOGOUT_PATH = "/.certgate/logout"
TRUSTED_PATH = "/.certgate/api/trusted-session"
INFO_PATH = "/.certgate/api/session"
LOGIN_PATH = "/.certgate/login"

_JS = """/* certgate presence: keeps proving the client certificate while this page is open. */
(function () {
  "use strict";
  var me = document.currentScript;
  try { if (window.top !== window && window.top.__certgatePresence) { return; } } catch (e) { /* cross-origin top */ }
  if (window.__certgatePresence) { return; }
  window.__certgatePresence = true;
  var interval = (me && +me.getAttribute("data-interval")) || %(interval)s;
  var redirect = !me || me.getAttribute("data-redirect") !== "off";
  /* on a login page served before any session (e.g. JOC's): 401 means "not logged in yet" */
  var awaiting = !!me && me.getAttribute("data-await-session") === "on", selfLogin = awaiting;
  var stopped = false, endsAt = 0, endTimer = null;
  function loginUrl() {
    /* a page served before any session is itself the way to log in (JOC's GUI): back to it */
    if (selfLogin) { return window.top.location.pathname + window.top.location.search; }
    return "%(login)s?next=" + encodeURIComponent(window.top.location.pathname + window.top.location.search);
  }
  function notice() {
    /* the session is over and the gateway cannot be reached (no certificate): say so on the page */
    try {
      var d = document.createElement("div"), p = document.createElement("p"), a = document.createElement("a");
      d.id = "certgate-session-ended";
      d.setAttribute("role", "alert");
      d.style.cssText = "position:fixed;inset:0;z-index:2147483647;background:rgba(255,255,255,.96);" +
        "font:16px system-ui,sans-serif;color:#222;padding:4em 2em;text-align:center";
      p.textContent = %(ended)s;
      a.textContent = "Log in again";
      a.href = loginUrl();
      d.appendChild(p);
      d.appendChild(a);
      document.body.appendChild(d);
    } catch (e) { /* no document body */ }
  }
  function ended(gone) {
    if (stopped) { return; }
    stopped = true;
    window.dispatchEvent(new CustomEvent("certgate-session-ended"));
    if (gone && redirect) {
      window.top.location.assign(loginUrl());
    } else {
      notice();
    }
  }
  function ping(retry) {
    if (stopped) { return; }
    var visible = document.visibilityState === "hidden" ? "0" : "1";
    fetch("%(path)s?visible=" + visible, {credentials: "same-origin", cache: "no-store",
                                          headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.status === 401) {
          if (awaiting) { return null; }
          /* the person logged out (here or in the app): the app's own reload decides what comes next */
          return (r.json ? r.json().catch(function () { return null; }) : Promise.resolve(null)).then(function (j) {
            if (j && typeof j.ended === "string" && /logout$/.test(j.ended)) { stopped = true; } else { ended(true); }
            return null;
          });
        }
        if (r.status === 200) { awaiting = false; }
        return r.status === 200 && r.json ? r.json() : null;
      })
      .then(function (j) {
        if (!j || stopped) { return; }
        if (typeof j.ends_at === "number" && typeof j.now === "number") {
          endsAt = Date.now() + (j.ends_at - j.now) * 1000;
          if (endTimer !== null) { clearTimeout(endTimer); }
          endTimer = setTimeout(function () { ping(false); }, Math.max(0, endsAt - Date.now()) + 500);
        }
        /* answered on an old connection, which the gateway now closes: ask again on a new one */
        if (j.fresh === false && !retry) { ping(true); }
      })
      .catch(function () {
        /* card pulled (no new handshake) or network down: past the session's end, say so */
        if (endsAt && Date.now() >= endsAt) { ended(false); }
      });
  }
  setInterval(function () { ping(false); }, interval * 1000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { ping(false); }
  });
  ping(false);
})();
"""

#: What the page says when the session ended and the gateway cannot be reached.
ENDED_TEXT = wording.SESSION_ENDED


def _seconds(interval: float) -> str:
    """``interval`` for the script: at least 0.5 s, as a short decimal."""
    return f"{max(0.5, float(interval)):g}"


def presence_script(interval: float) -> bytes:
    """The page script with ``interval`` (seconds) as its default ping period."""
    return (_JS % {"interval": _seconds(interval), "path": PRESENCE_PATH, "login": LOGIN_PATH,
                   "ended": json.dumps(ENDED_TEXT)}).encode("utf-8")


def script_tag(interval: float, await_session: bool = False) -> bytes:
    """The ``<script>`` element to add to a page (external, same-origin: passes ``script-src 'self'``).

    ``await_session``: the page was served before any session (a single-page app's login page);
    the script ignores 401 until it has seen the session once, then behaves as usual.
    """
    extra = ' data-await-session="on"' if await_session else ""
    return (f'<script src="{SCRIPT_PATH}" data-interval="{_seconds(interval)}"{extra} defer></script>'
            .encode("ascii"))


# --------------------------------------------------------------------------- HTML injection

_HEAD_END = re.compile(rb"</head\s*>", re.I)
_BODY_END = re.compile(rb"</body\s*>", re.I)


def should_inject(status: int, headers: Headers) -> bool:
    """True for a 200 ``text/html`` response without a content encoding (we never rewrite compressed bodies)."""
    if status != 200:
        return False
    ctype = enc = b""
    for k, v in headers:
        lk = k.lower()
        if lk == b"content-type":
            ctype = v.lower()
        elif lk == b"content-encoding":
            enc = v.strip().lower()
    return ctype.startswith(b"text/html") and enc in (b"", b"identity")


class HtmlInjector:
    """Adds the presence script tag before ``</head>`` (else before ``</body>``) of a streamed page.

    ``feed(chunk)`` returns the bytes to send now; ``finish()`` the rest. At most ``limit``
    bytes are held back while looking for ``</head>``; past that (or when absent) the page
    passes unchanged. The caller must drop ``Content-Length`` (the length changes) and send
    the body chunked or close-delimited. The tag is an external same-origin script, so a
    ``Content-Security-Policy`` with ``script-src 'self'`` (Cockpit's) allows it; a policy
    with only nonces or hashes would block it (the page then works, without presence pings).
    """

    def __init__(self, interval: float, limit: int = 65536, await_session: bool = False) -> None:
        self._tag = script_tag(interval, await_session)
        self._limit = limit
        self._buf = b""
        self._done = False

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return chunk
        self._buf += chunk
        m = _HEAD_END.search(self._buf)
        if m is not None:
            out = self._buf[:m.start()] + self._tag + self._buf[m.start():]
            self._buf, self._done = b"", True
            return out
        if len(self._buf) > self._limit:
            out, self._buf, self._done = self._buf, b"", True
            return out
        return b""

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        buf, self._buf = self._buf, b""
        m = _BODY_END.search(buf)
        if m is not None:
            return buf[:m.start()] + self._tag + buf[m.start():]
        return buf


def inject_presence_script(html: bytes, interval: float) -> bytes:
    """``html`` with the presence script tag added (see :class:`HtmlInjector`)."""
    inj = HtmlInjector(interval, limit=len(html) + 1)
    return inj.feed(html) + inj.finish()


# --------------------------------------------------------------------------- endpoints

def same_origin(head: RequestHead) -> bool:
    """CSRF check for state-changing requests: :func:`proxy.gate.sameorigin.cross_site` finds nothing."""
    return cross_site(head) is None


def _json(status: int, obj: object, *, extra: Headers | None = None, close: bool = False) -> Response:
    hs: Headers = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store")] + (extra or [])
    return Response(status, hs, json.dumps(safe_json(obj), separators=(",", ":")).encode("utf-8"),
                    close=close)


def _html(status: int, body: str, extra: Headers | None = None) -> Response:
    hs: Headers = [(b"Content-Type", b"text/html; charset=utf-8"), (b"Cache-Control", b"no-store"),
                   (b"Content-Security-Policy", b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
                   (b"X-Frame-Options", b"DENY"), (b"Referrer-Policy", REFERRER_POLICY)] + (extra or [])
    return Response(status, hs, body.encode("utf-8"))


def _method_not_allowed(allow: bytes) -> Response:
    return _json(405, {"error": "method-not-allowed", "message": f"use {allow.decode()}", "allow": allow.decode()},
                 extra=[(b"Allow", allow)])


def _login_401(reason: str, sessions: "Sessions", ended: str | None = None) -> Response:
    """401 for a request of no live session; ``ended`` (why the session ended, e.g. ``logout``)
    lets the page script leave a logged-out page to the app instead of sending it to certgate's login."""
    body: dict[str, object] = {"error": reason, "message": "log in again", "login": LOGIN_PATH}
    if ended:
        body["ended"] = ended
    return _json(401, body,
                 extra=[(b"WWW-Authenticate", b'Certgate realm="certgate"')] + sessions.clear_cookie_headers())


_LOGOUT_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Log out - certgate</title>
<style>body{font-family:system-ui,sans-serif;max-width:30em;margin:4em auto}</style></head>
<body><h1>Log out</h1><form method="post" action="/.certgate/logout"><button type="submit">Log out</button></form>
</body></html>"""
_LOGGED_OUT = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Logged out - certgate</title>
<style>body{font-family:system-ui,sans-serif;max-width:30em;margin:4em auto}</style></head>
<body><h1>Logged out</h1><p>Your certgate session has ended. Quit the browser or remove the smart card to stop
presenting your certificate.</p><p><a href="/.certgate/login">Log in again</a></p></body></html>"""


def session_view(sessions: "Sessions", chk: "SessionCheck") -> dict[str, Any]:
    """The JSON description of a live session (no cookie, no certificate bytes)."""
    rec = chk.record
    assert rec is not None
    ends, why = sessions.ends_at(rec)
    return {"account": rec.account, "fingerprint": rec.fingerprint, "created_at": rec.created_at,
            "proved_at": rec.proved_at, "last_seen": rec.last_seen, "ends_at": ends, "end_reason": why,
            "trusted": rec.long_until > 0, "long_until": rec.long_until, "methods": list(rec.methods),
            "client_ip": rec.client_ip, "presence_interval": sessions.settings.presence_interval,
            "now": sessions.clock.seconds()}


def session_endpoints(sessions: Sessions, *, clock: Clock | None = None,
                      retry_after: bytes = b"2") -> dict[str, Endpoint]:
    """The endpoints above, keyed by exact path, for ``Gate(endpoints=...)``.

    ``retry_after`` is the ``Retry-After`` of their 503 when the store cannot answer (the service
    passes ``[sessions] store_deadline`` rounded up; 2 s is that key's default)."""
    clock = clock or sessions.clock
    interval = float(sessions.settings.presence_interval)
    script = presence_script(interval)

    def check(head: RequestHead, conn: ConnContext, activity: bool = True) -> "Deferred[SessionCheck] | None":
        sid = sessions.session_id(head)
        if sid is None:
            return None
        ident = conn.identity
        return sessions.check(sid, ident, ident.client_ip, activity=activity)

    @inlineCallbacks
    def presence(head: RequestHead, conn: ConnContext) -> Any:
        if head.method not in (b"GET", b"HEAD"):
            return _method_not_allowed(b"GET, HEAD")
        chk = yield check(head, conn, activity="visible=0" not in head.query.split("&"))
        if chk is None or not chk.ok:
            return _login_401("login-required" if chk is None else (chk.reason or "session-ended"), sessions,
                              ended=None if chk is None else chk.ended)
        ident = conn.identity
        fresh = ident.presented and clock.seconds() - ident.handshake_at <= interval
        view = session_view(sessions, chk)
        view["fresh"] = fresh
        return _json(200, view, close=not fresh)

    def presence_js(head: RequestHead, conn: ConnContext) -> Response:
        if head.method not in (b"GET", b"HEAD"):
            return _method_not_allowed(b"GET, HEAD")
        return Response(200, [(b"Content-Type", b"text/javascript; charset=utf-8"),
                              (b"Cache-Control", b"private, max-age=300"),
                              (b"X-Content-Type-Options", b"nosniff")], script)

    @inlineCallbacks
    def logout(head: RequestHead, conn: ConnContext) -> Any:
        if head.method == b"GET":
            return _html(200, _LOGOUT_PAGE)
        if head.method != b"POST":
            return _method_not_allowed(b"GET, POST")
        if not same_origin(head):
            return _json(403, {"error": "cross-site-request", "message": "logout must come from this site"})
        sid = sessions.session_id(head)
        if sid is not None:
            yield sessions.end(sid, "logout")
        clear = sessions.clear_cookie_headers()
        if head.wants_html():
            return _html(200, _LOGGED_OUT, clear)
        return _json(200, {"ok": True, "logged_out": sid is not None}, extra=clear)

    @inlineCallbacks
    def trusted(head: RequestHead, conn: ConnContext) -> Any:
        if head.method == b"GET":
            chk = yield check(head, conn)
            if chk is None or not chk.ok:
                return _login_401("login-required" if chk is None else (chk.reason or "session-ended"), sessions)
            return _json(200, session_view(sessions, chk))
        if head.method not in (b"POST", b"DELETE"):
            return _method_not_allowed(b"GET, POST, DELETE")
        if not same_origin(head):
            return _json(403, {"error": "cross-site-request", "message": "this request must come from this site"})
        sid = sessions.session_id(head)
        if sid is None:
            return _login_401("login-required", sessions)
        op = sessions.activate_long if head.method == b"POST" else sessions.deactivate_long
        chk = yield op(sid, conn.identity)
        if chk.ok:
            return _json(200, session_view(sessions, chk))
        if chk.reason == "fresh-proof-required":
            # close this connection: the client's retry makes a new handshake, i.e. a fresh proof
            return _json(403, {"error": "fresh-proof-required",
                               "message": f"present your certificate on a new connection (a full TLS handshake "
                                          f"at most {interval:g} s old) and retry"}, close=True)
        return _login_401(chk.reason or "session-ended", sessions)

    @inlineCallbacks
    def info(head: RequestHead, conn: ConnContext) -> Any:
        if head.method not in (b"GET", b"HEAD"):
            return _method_not_allowed(b"GET, HEAD")
        chk = yield check(head, conn)
        if chk is None or not chk.ok:
            return _login_401("login-required" if chk is None else (chk.reason or "session-ended"), sessions)
        return _json(200, session_view(sessions, chk))

    eps = {PRESENCE_PATH: presence, SCRIPT_PATH: presence_js, LOGOUT_PATH: logout, TRUSTED_PATH: trusted,
           INFO_PATH: info}
    return {path: _store_errors_as_503(fn, retry_after) for path, fn in eps.items()}


def _store_errors_as_503(fn: Callable[[RequestHead, ConnContext], Any], retry_after: bytes = b"2"
                         ) -> "Endpoint":
    """A session store failure answers 503 (fail closed) instead of breaking the connection."""
    from proxy.stores.interface import StoreError

    def down(f: Any) -> Response:
        f.trap(StoreError)
        return _json(503, {"error": "session-store-unavailable", "message": "try again shortly"},
                     extra=[(b"Retry-After", retry_after)])

    def wrapped(head: RequestHead, conn: ConnContext) -> "Deferred[Decision]":
        d: Deferred[Decision] = maybeDeferred(fn, head, conn)
        return d.addErrback(down)

    wrapped.__name__ = getattr(fn, "__name__", "endpoint")
    return wrapped
