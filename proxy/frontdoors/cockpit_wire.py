"""Cockpit's login wire format, as its login page (``login.js``) speaks it; pure, no I/O.

What the page sends: ``Authorization: Basic`` credentials on ``<UrlRoot>cockpit/login`` and the
cookies of cockpit-ws. What it reads: a JSON problem answer whose reason phrase it shows, and
the ``X-Conversation`` challenge that makes it prompt for a code. The front door
(:mod:`proxy.frontdoors.cockpit`) decides which answer to give; this module only spells them.
"""

from __future__ import annotations

import base64
import binascii
import json

from proxy.http.messages import Headers, RequestHead, Response
from proxy.login.outcome import AuthOutcome
from trust.escape import safe_json, safe_text

PROMPT = "Authenticator code (6 digits): "
_CERT_REASONS = frozenset({"no-certificate", "certificate-invalid", "cn-mismatch"})


def normalize_root(url_root: str) -> str:
    """``/``-framed UrlRoot: ``cg`` -> ``/cg/``, ``/`` -> ``/``."""
    inner = url_root.strip().strip("/")
    return "/" + inner + "/" if inner else "/"


def decode_basic(value: str) -> tuple[str, str] | None:
    """``(user, password)`` of a Basic credential (UTF-8, split at the first colon), else None."""
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    if not sep:
        return None
    return user, password


def strip_cockpit_cookies(head: RequestHead, also: bytes = b"") -> bytes | None:
    """The request's Cookie value without cockpit's own cookies (``cockpit``, ``machine-cockpit*``)
    and without the cookie named ``also`` (certgate's session cookie).

    None when the request has no Cookie header at all.
    """
    raw = head.get_all(b"cookie")
    if not raw:
        return None
    kept = []
    for value in raw:
        for part in value.split(b";"):
            name = part.split(b"=", 1)[0].strip()
            if not name or name == b"cockpit" or name.startswith(b"machine-cockpit") or (also and name == also):
                continue
            kept.append(part.strip())
    return b"; ".join(kept)


def answer(status: int, problem: str, message: str, headers: Headers | None = None) -> Response:
    """A JSON problem answer; ``message`` becomes the reason phrase login.js shows for a 403."""
    body = json.dumps(safe_json({"problem": problem, "message": message})).encode("utf-8")
    hs: Headers = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-cache, no-store")]
    return Response(status, hs + (headers or []), body,
                    reason=safe_text(message).encode("ascii", "backslashreplace"))


def outcome_refusal(out: AuthOutcome) -> Response:
    """The answer to a failed LoginService outcome (already audited by the service)."""
    if out.reason == "throttled":
        return answer(403, "throttled", out.public_message,
                      [(b"Retry-After", str(out.retry_after or 1).encode("ascii"))])
    if out.reason == "busy":
        return answer(503, "busy", out.public_message, [(b"Retry-After", b"1")])
    if out.reason == "session-store-unavailable":
        return answer(503, "session-store-unavailable", out.public_message,
                      [(b"Retry-After", str(out.retry_after or 1).encode("ascii"))])
    if out.reason == "session-limit":
        return answer(403, "session-limit", out.public_message)
    if out.reason in _CERT_REASONS:
        # login.js shows a 403's reason phrase: the same plain words as certgate's own page
        return answer(403, "access-denied", out.public_message)
    # bad password, bad code...: uniform, as cockpit's own "Authentication failed"
    return answer(401, "authentication-failed", "Authentication failed")


def code_challenge(nonce: str) -> Response:
    """The ``401`` + ``WWW-Authenticate: X-Conversation <nonce> <base64(prompt)>`` that makes the
    page ask for the authenticator code (with the JSON body cockpit 287 sends)."""
    prompt = base64.b64encode(PROMPT.encode("utf-8")).decode("ascii")
    challenge = f"X-Conversation {nonce} {prompt}".encode("ascii")
    body = json.dumps({"command": "authorize", "echo": False}).encode("utf-8")
    return Response(401, [(b"WWW-Authenticate", challenge), (b"Content-Type", b"application/json"),
                          (b"Cache-Control", b"no-cache, no-store")], body, reason=b"Authentication required")
