"""Pure HTTP/1.1 wire helpers for :mod:`proxy.http.connection`: request-head checks and response bytes.

Nothing here does I/O. ``check_request`` is the policy the parser (llhttp) does not enforce
by itself: exactly ``chunked`` as transfer coding, no coding on HTTP/1.0, one ``Host``, a
request target that can be made canonical (``proxy.paths``), WebSocket-only upgrades. The
rest (CL+TE, duplicate or malformed ``Content-Length``, bare LF, obs-fold, control
characters) llhttp already refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from proxy.http.headers import render_headers
from proxy.http.messages import Response
from proxy.paths import TargetError, canonical_target
from proxy.http.tunnel import valid_ws_key

REASONS: dict[int, bytes] = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created", 202: b"Accepted",
    204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently", 302: b"Found",
    303: b"See Other", 304: b"Not Modified", 307: b"Temporary Redirect", 308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict", 410: b"Gone",
    411: b"Length Required", 413: b"Content Too Large", 414: b"URI Too Long", 417: b"Expectation Failed",
    421: b"Misdirected Request", 426: b"Upgrade Required", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 501: b"Not Implemented",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}

#: Short bodies for errors certgate generates itself (never any internal detail).
ERROR_TEXT: dict[int, bytes] = {
    400: b"bad request\n", 403: b"forbidden\n", 408: b"request timeout\n", 413: b"request body too large\n",
    414: b"request line too long\n", 417: b"expectation not supported\n",
    431: b"request header fields too large\n", 500: b"internal error\n", 501: b"not implemented\n",
    502: b"bad gateway: the upstream is not reachable\n", 503: b"service unavailable\n",
    504: b"gateway timeout: the upstream did not answer in time\n", 505: b"HTTP version not supported\n",
}

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES: dict[int, bytes] = {s: b"HTTP/1.1 %d %s\r\n" % (s, r) for s, r in REASONS.items()}
_ERRORS: dict[int, bytes] = {}


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n`` (cached for known codes without a custom reason)."""
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
        reason = REASONS.get(status, b"Status")
    return b"HTTP/1.1 %d %s\r\n" % (status, reason.replace(b"\r", b"").replace(b"\n", b""))


def error_bytes(status: int) -> bytes:
    """A complete error response with ``Connection: close`` (cached)."""
    out = _ERRORS.get(status)
    if out is None:
        body = ERROR_TEXT.get(status, b"error\n")
        out = (status_line(status) + b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        _ERRORS[status] = out
    return out


def refusal_bytes(status: int, why: str) -> bytes:
    """Like :func:`error_bytes` with a one-line reason (``why`` is certgate's text, never client bytes)."""
    body = ERROR_TEXT.get(status, b"error\n").rstrip(b"\n") + b": " + why.encode("ascii", "replace") + b"\n"
    return (status_line(status) + b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


#: What a person reads when the engine answers a browser's page load itself (title, sentence).
#: Statuses without an entry get :data:`ERROR_TEXT` as plain text.
PAGE_TEXT: dict[int, tuple[str, str]] = {
    413: ("Too much data", "This request carried more data than the gateway accepts."),
    500: ("Something went wrong", "The gateway could not answer this request. Reload the page; "
          "if this goes on, tell your administrator."),
    502: ("The console is not reachable", "The gateway could not connect to the service behind it, which "
          "may be restarting. Reload this page in a moment; if this goes on, tell your administrator."),
    504: ("The console did not answer in time", "The service behind the gateway did not answer in time. "
          "Reload this page in a moment; if this goes on, tell your administrator."),
}

#: certgate's error page, filled with ``str.format``: the gate's explanations and the engine's
#: own answers. ``title``, ``message`` and ``footer`` are markup the caller has escaped;
#: ``extra`` and ``links`` are trusted markup (empty or whole ``<p>`` lines).
ERROR_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - certgate</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}}
h1{{font-size:1.4em}} code{{background:#f3f3f3;padding:0 .2em}} .why{{border-left:4px solid #c33;padding:.4em .8em;
background:#fdf3f3}}</style></head>
<body><h1>{title}</h1><p class="why" role="alert">{message}</p>{extra}
{links}<p><small>certgate &middot; {footer}</small></p></body></html>
"""
_PAGES: dict[int, bytes | None] = {}


def error_page_bytes(status: int) -> bytes | None:
    """A complete HTML error response with ``Connection: close`` for a browser's page load (cached),
    or None when ``status`` has no page (see :data:`PAGE_TEXT`).

    The page holds certgate's own words only, nothing of the request, so one copy serves
    every client. Only for GET: the body is always sent (a HEAD answer must not carry one).
    """
    if status in _PAGES:
        return _PAGES[status]
    text = PAGE_TEXT.get(status)
    out = None
    if text is not None:
        body = ERROR_PAGE.format(title=text[0], message=text[1], extra="", links="",
                                 footer=f"status {status}").encode("utf-8")
        out = (status_line(status) + b"Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n"
               b"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
               b"X-Frame-Options: DENY\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    _PAGES[status] = out
    return out


def render_response(resp: Response, *, head_only: bool, close: bool, keep_alive_10: bool) -> bytes:
    """Bytes of a locally generated response; ``Content-Length`` added, body dropped for HEAD."""
    body = resp.body
    no_body = resp.status in (204, 304) or 100 <= resp.status < 200
    hs = [(k, v) for k, v in resp.headers
          if k.lower() not in (b"content-length", b"transfer-encoding", b"connection")]
    parts = [status_line(resp.status, resp.reason), render_headers(hs)]
    if not no_body:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        parts.append(b"Connection: close\r\n")
    elif keep_alive_10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not head_only and not no_body:
        parts.append(body)
    return b"".join(parts)


@dataclass(slots=True)
class HeadFacts:
    """What the HTTP layer needs from one pass over the request headers."""

    error: int = 0  # 0 = acceptable; else the status to answer
    why: str = ""  # with ``error``: a one-line reason for the client (certgate's words only)
    target: bytes = b""  # the canonical request target (``proxy.paths``) when ``error == 0``
    host: bytes | None = None
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False
    websocket: bool = False
    ws_key: bytes | None = None
    origin: bytes | None = None


_INTERESTING = frozenset({b"host", b"transfer-encoding", b"content-length", b"connection", b"upgrade",
                          b"expect", b"sec-websocket-key", b"origin", b"authorization"})


def check_request(method: bytes, target: bytes, version: bytes, headers: Sequence[tuple[bytes, bytes]],
                  parser_upgrade: bool) -> HeadFacts:
    """Policy checks on a parsed request head; ``error`` says which status refuses it.

    Guarantees when ``error == 0``: HTTP/1.0 or 1.1; ``target`` is the canonical form of the
    request target (origin-form, or ``*`` for OPTIONS), which every decision and the forwarded
    request use;
    at most one Host (exactly one on 1.1); at most one Authorization; no transfer coding except
    exactly ``chunked`` on 1.1; an ``Upgrade`` only as a well-formed WebSocket GET without body.
    Does not check the Origin allow-list (that needs configuration).
    """
    f = HeadFacts()
    if version != b"1.1" and version != b"1.0":
        f.error = 505 if version[:1] in (b"2", b"3") else 400
        return f
    try:
        f.target = canonical_target(target, method)
    except TargetError as e:
        f.error = 400
        f.why = "request target refused: " + e.reason
        return f
    if method == b"CONNECT" or method == b"PRI":
        f.error = 400
        return f
    hosts = 0
    auths = 0
    conn_tokens: list[bytes] = []
    upgrades: list[bytes] = []
    ws_keys = 0
    for k, v in headers:
        n = k.lower()
        if n not in _INTERESTING:
            continue
        if n == b"host":
            hosts += 1
            f.host = v
        elif n == b"transfer-encoding":
            if v.strip().lower() != b"chunked" or version == b"1.0":
                f.error = 400
                return f
            f.chunked = True
        elif n == b"content-length":
            f.content_length = int(v)
        elif n == b"connection":
            conn_tokens += [t.strip().lower() for t in v.split(b",")]
        elif n == b"upgrade":
            upgrades.append(v.strip().lower())
        elif n == b"expect":
            if v.strip().lower() != b"100-continue":
                f.error = 417
                return f
            f.expect_continue = version == b"1.1"
        elif n == b"sec-websocket-key":
            ws_keys += 1
            f.ws_key = v
        elif n == b"origin":
            f.origin = v
        else:  # authorization
            auths += 1
    if hosts > 1 or auths > 1 or (hosts == 0 and version == b"1.1"):
        f.error = 400
        return f
    if version == b"1.1":
        f.keep_alive = b"close" not in conn_tokens
    else:
        f.keep_alive = b"keep-alive" in conn_tokens and b"close" not in conn_tokens
    if upgrades or parser_upgrade:
        # Only a WebSocket handshake may switch protocols (h2c and anything else: refused).
        if (upgrades != [b"websocket"] or b"upgrade" not in conn_tokens or method != b"GET"
                or version != b"1.1" or f.chunked or (f.content_length or 0) > 0
                or ws_keys != 1 or f.ws_key is None or not valid_ws_key(f.ws_key)):
            f.error = 400
            return f
        f.websocket = True
    return f
