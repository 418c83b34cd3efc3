"""A faithful emulator of JS7 JOC Cockpit's login API (``/joc/api``), a real HTTP server on loopback.

Modelled on sos-components' ``SOSServicePermissionIam`` / ``JOCDefaultResponse`` /
``SOSAuthHelper`` / ``SOSForceDelayHandler`` as summarised in research/cockpit-joc.md §5:

- ``POST /joc/api/authentication/login`` with ``Authorization: Basic base64(account:password)``:
  missing header -> ``420`` (JOC-420 body); undecodable -> ``420 Invalid Request``; the account
  is before the first ``:``, the password after it (None without ``:``); an empty account takes
  the client certificate's CN (only when the emulator terminates TLS itself and the client sent
  one -- never from a header). Identity-service ``mode``: ``password`` (account table),
  ``cert-single`` (account must exist, ``CN == account`` exactly, certificate in its validity
  window) or ``password+cert-2fa`` (password, then ``CN == account`` with the domain stripped).
  Success: ``200`` + ``X-Access-Token`` (UUID) + ``X-JOC-Timeout`` (ms) + the
  ``SOSAuthCurrentAccountAnswer`` JSON. Failure: ``401`` ``Access denied`` after the forced
  delay (``delays``: failures 1-2 of an account or IP wait ``delays[0]``, later ones ``delays[1]``;
  real JOC about 1-3 s and 25-35 s; tests pass small values), counters reset by a success.
- Any other ``POST /joc/api/*`` needs ``X-Access-Token``: unknown or idle-expired -> ``440``;
  each call refreshes the idle time (``POST /joc/api/touch`` too).
- ``POST /joc/api/authentication/logout``: ``420`` without a token, else ``200`` and the token dies.
- ``POST /joc/api/configuration/login`` and ``/joc/api/iam/identityproviders`` answer without login.
- ``POST /joc/api/events`` (token needed): JOC's GUI keeps one such request open (long polling);
  the emulator holds it ``event_hold`` seconds, then answers ``{"eventId": n, "events": [...]}``.
- ``GET /joc/`` (and ``/joc/index.html``): a small single-page GUI standing in for JOC's: a login
  form calling the login API, then a loop of ``/joc/api/events`` long polls on one long-lived
  connection, an events counter, a "Log out" button calling the logout API, and JOC's reaction
  to ``401``/``440`` (the session expired: back to the login form with a message).

Paths are routed the lenient way a Jetty + JAX-RS stack may route them (:func:`jetty_path`):
``;`` parameters dropped, escapes decoded, empty and dot segments resolved, a trailing ``/``
ignored -- so a test can show that such a spelling reaches the login when nothing stops it.

``requests`` records every request (method, path, headers) so tests can assert what reached JOC.
Time comes from ``now`` (injectable); waits use ``threading.Event().wait``.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import unquote

IDLE_MS = 30 * 60 * 1000


def jetty_path(target: str) -> str:
    """The path JOC's servlet stack may route ``target`` to (a superset of Jetty + JAX-RS leniency).

    ``;`` path parameters are dropped from each segment (servlet rule), escapes decoded (also
    ``%2F``, as older Jetty versions did), ``\\`` taken as ``/`` (as on Windows), empty and ``.``
    segments dropped, ``..`` applied (never above the root), and a trailing ``/`` ignored
    (JAX-RS). Letter case is kept.
    """
    raw = target.split("?", 1)[0].replace("\\", "/").split("/")[1:]
    decoded = "/".join(unquote(seg.split(";", 1)[0]) for seg in raw).replace("\\", "/")
    segs: list[str] = []
    for seg in decoded.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if segs:
                segs.pop()
            continue
        segs.append(seg)
    return "/" + "/".join(segs)


def strip_domain(account: str) -> str:
    """JOC's ``SOSLoginUserName``: ``alice@EXAMPLE`` and ``EXAMPLE\\alice`` become ``alice``."""
    if "\\" in account:
        account = account.split("\\", 1)[1]
    return account.split("@", 1)[0]


@dataclass
class Recorded:
    method: str
    path: str  # as received, without the query
    headers: dict[str, str]
    body: bytes
    route: str = ""  # where JOC routes it (jetty_path)
    at: float = 0.0  # when the request arrived (the emulator's clock)


@dataclass
class JocEmulator:
    """Start with ``with JocEmulator(accounts={"alice": "pw"}) as joc: joc.port ...``."""

    accounts: Mapping[str, str] = field(default_factory=dict)
    mode: str = "password"  # password | cert-single | password+cert-2fa
    delays: tuple[float, float] = (0.0, 0.0)
    ssl_context: ssl.SSLContext | None = None  # set to terminate TLS (cert modes); "want" client certs
    now: Callable[[], float] = time.time
    event_hold: float = 2.0  # seconds an /joc/api/events long poll is held open
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ("password", "cert-single", "password+cert-2fa"):
            raise ValueError(f"unknown JOC identity-service mode {self.mode!r}")
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (account, last use)
        self.failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._closing = threading.Event()
        self.event_id = 0
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "JocEmulator":
        emu = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                emu._handle(self, body)

            def do_GET(self) -> None:  # noqa: N802
                emu._record(self, b"")
                if self.path.split("?", 1)[0] in ("/joc/", "/joc/index.html"):
                    data = GUI_PAGE.encode("utf-8")
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                emu._send(self, 405, {"error": {"code": "JOC-405", "message": "Method Not Allowed"}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # held long polls answer now
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def logins(self) -> list[Recorded]:
        """The login requests that reached the emulator."""
        return [r for r in self.requests if r.route == "/joc/api/authentication/login"]

    # ------------------------------------------------------------------ HTTP

    def _record(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.requests.append(Recorded(h.command, h.path.split("?", 1)[0], dict(h.headers.items()), body,
                                          jetty_path(h.path), self.now()))

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(obj).encode("utf-8")
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, message: str, status: int = 420) -> None:
        now_ms = int(self.now() * 1000)
        self._send(h, status, {"deliveryDate": now_ms, "surveyDate": now_ms,
                               "error": {"code": "JOC-420", "message": message}})

    def _handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        self._record(h, body)
        path = jetty_path(h.path)
        if path == "/joc/api/authentication/login":
            return self._login(h)
        if path in ("/joc/api/configuration/login", "/joc/api/iam/identityproviders"):
            return self._send(h, 200, {"needAccountPassword": self.mode != "cert-single", "needLoginButton": True}
                              if path.endswith("identityproviders") else {"configuration": {}})
        token = h.headers.get("X-Access-Token")
        if path == "/joc/api/authentication/logout":
            if not token:
                return self._error(h, "Access token header expected")
            with self._lock:
                entry = self.tokens.pop(token, None)
            return self._send(h, 200, {"account": entry[0] if entry else "", "isAuthenticated": False,
                                       "hasRole": False, "isPermitted": False, "accessToken": ""})
        if not path.startswith("/joc/api/"):
            return self._send(h, 404, {"error": {"code": "JOC-404", "message": "Not Found"}})
        account = self._use_token(token)
        if account is None:
            return self._send(h, 440, {"isAuthenticated": False, "message": "SessionNotExistException: Session "
                                       "has expired. New login is neccessary"})
        if path == "/joc/api/events":
            self._closing.wait(self.event_hold)  # long polling: the GUI's request stays open
            with self._lock:
                self.event_id += 1
                n = self.event_id
            return self._send(h, 200, {"eventId": n, "events": [{"eventType": "JOCStateChanged", "eventId": n}],
                                       "deliveryDate": int(self.now() * 1000)})
        return self._send(h, 200, {"account": account, "path": path, "deliveryDate": int(self.now() * 1000)})

    def _use_token(self, token: str | None) -> str | None:
        if not token:
            return None
        with self._lock:
            entry = self.tokens.get(token)
            now = self.now()
            if entry is None or (now - entry[1]) * 1000 >= IDLE_MS:
                self.tokens.pop(token, None)
                return None
            self.tokens[token] = (entry[0], now)
            return entry[0]

    # ------------------------------------------------------------------ login

    def _client_cn(self, h: BaseHTTPRequestHandler) -> tuple[str | None, bool]:
        """(CN, within validity) of the TLS client certificate; never from a header."""
        sock = h.connection
        if not isinstance(sock, ssl.SSLSocket):
            return None, False
        cert: Any = sock.getpeercert()  # typeshed types getpeercert() loosely
        if not cert:
            return None, False
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        t = self.now()
        valid = ssl.cert_time_to_seconds(cert["notBefore"]) <= t <= ssl.cert_time_to_seconds(cert["notAfter"])
        return cn, valid

    def _login(self, h: BaseHTTPRequestHandler) -> None:
        auth = h.headers.get("Authorization")
        if auth is None:
            return self._error(h, "The Header Authorization with the Base64 encoded authorization string is missing")
        try:
            raw = base64.b64decode(auth.strip().partition(" ")[2].strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return self._error(h, "Invalid Request")
        account, sep, password = raw.partition(":")
        pw: str | None = password if sep else None
        cn, cert_valid = self._client_cn(h)
        if not account and cn is not None:
            account = cn
        ok = self._check(account, pw, cn, cert_valid)
        ip = h.client_address[0]
        if not ok:
            self._delay(account, ip)
            return self._send(h, 401, {"account": account, "isAuthenticated": False, "message": "Access denied",
                                       "isPermitted": False, "hasRole": False, "isApprover": False,
                                       "isApprovalRequestor": False, "forcePasswordChange": False,
                                       "enableTouch": True})
        with self._lock:
            self.failures.pop("account:" + account, None)
            self.failures.pop("ip:" + ip, None)
            token = str(uuid.uuid4())
            self.tokens[token] = (account, self.now())
        self._send(h, 200, {"account": account, "role": "application_manager", "isPermitted": False,
                            "hasRole": True, "isApprover": False, "isApprovalRequestor": False,
                            "isAuthenticated": True, "forcePasswordChange": False, "accessToken": token,
                            "message": "", "sessionTimeout": IDLE_MS, "enableTouch": True,
                            "callerIpAddress": ip, "callerHostName": ip, "identityService": "JOC:JOC-INITIAL"},
                   {"X-Access-Token": token, "X-JOC-Timeout": str(IDLE_MS)})

    def _check(self, account: str, password: str | None, cn: str | None, cert_valid: bool) -> bool:
        if not account:
            return False
        if self.mode == "cert-single":
            return account in self.accounts and cn is not None and cn == account and cert_valid
        known = self.accounts.get(account) if self.mode == "password" else self.accounts.get(strip_domain(account))
        if known is None or password is None or password != known:
            return False
        if self.mode == "password+cert-2fa":
            return cn is not None and cn == strip_domain(account) and cert_valid
        return True

    def _delay(self, account: str, ip: str) -> None:
        with self._lock:
            worst = 0
            for key in ("account:" + account, "ip:" + ip):
                self.failures[key] = self.failures.get(key, 0) + 1
                worst = max(worst, self.failures[key])
        wait = self.delays[0] if worst <= 2 else self.delays[1]
        if wait > 0:
            threading.Event().wait(wait)


#: The emulator's stand-in for JOC's single-page GUI (``GET /joc/``): log in through the API,
#: then keep one long poll of ``/joc/api/events`` open after another.
GUI_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>JS7 JOC Cockpit (emulator)</title></head>
<body>
<h1>JS7 JOC Cockpit (emulator)</h1>
<form id="login">
  <p id="login-message"></p>
  <label>Account <input id="account" name="account" autocomplete="off"></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="login-button" type="submit">Log in</button>
</form>
<div id="dashboard" hidden>
  <p>Logged in as <span id="who"></span>. Events received: <span id="events">0</span></p>
  <button id="logout" type="button">Log out</button>
</div>
<p id="state">idle</p>
<script>
(function () {
  "use strict";
  var token = null, running = false;
  function $(id) { return document.getElementById(id); }
  function api(path, body) {
    var headers = {"Content-Type": "application/json", "Accept": "application/json"};
    if (token) { headers["X-Access-Token"] = token; }
    return fetch("/joc/api/" + path, {method: "POST", headers: headers, credentials: "same-origin",
                                       body: JSON.stringify(body || {})});
  }
  function expired(status) {
    /* JOC's GUI: 401 and 440 mean the session is over; back to the login form */
    running = false; token = null;
    $("dashboard").hidden = true; $("login").hidden = false;
    $("login-message").textContent = "Session expired (HTTP " + status + "). Please log in again.";
    $("state").textContent = "expired";
  }
  function poll() {
    if (!running) { return; }
    $("state").textContent = "waiting for events";
    api("events", {eventId: +$("events").textContent}).then(function (r) {
      if (r.status === 401 || r.status === 440) { expired(r.status); return null; }
      return r.json();
    }).then(function (j) {
      if (!j || !running) { return; }
      $("events").textContent = String(+$("events").textContent + (j.events || []).length);
      poll();
    }).catch(function () {
      $("state").textContent = "connection failed";
      setTimeout(poll, 1000);
    });
  }
  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var auth = "Basic " + btoa($("account").value + ":" + $("password").value);
    fetch("/joc/api/authentication/login", {method: "POST", credentials: "same-origin",
        headers: {"Authorization": auth, "Content-Type": "application/json"}, body: "{}"})
      .then(function (r) { return r.json().then(function (j) { return [r, j]; }); })
      .then(function (rj) {
        var r = rj[0], j = rj[1];
        if (r.status !== 200 || !j.isAuthenticated) {
          $("login-message").textContent = "Login failed (HTTP " + r.status + "): " + (j.message || "");
          return;
        }
        token = r.headers.get("X-Access-Token");
        $("who").textContent = j.account;
        $("login").hidden = true; $("dashboard").hidden = false; $("login-message").textContent = "";
        running = true;
        poll();
      });
  });
  $("logout").addEventListener("click", function () {
    api("authentication/logout").then(function () {
      running = false; token = null;
      $("dashboard").hidden = true; $("login").hidden = false;
      $("login-message").textContent = "Logged out.";
      $("state").textContent = "logged out";
    });
  });
})();
</script>
</body></html>
"""
