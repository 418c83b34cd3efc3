"""``POST /.certgate/api/auth``: the JSON login API (single- or multi-step, Keystone receipts).

Request: ``{"account": "alice", "password": "...", "totp": "123456", "webauthn": {...}}``
(account required, the others optional; ``webauthn`` is the credential's JSON as the browser's
``PublicKeyCredential.toJSON()`` gives it), ``Content-Type: application/json``, optional
``Certgate-Auth-Receipt`` header from a previous partial success. Answers:

- 200 ``{"account", "methods", "session": {"expires_at"}}`` + the session's Set-Cookie;
- 401 + ``Certgate-Auth-Receipt`` header + ``{"receipt": {...}, "required_auth_methods"}``
  on a partial success (Keystone's shape, no WWW-Authenticate); when ``webauthn`` is still
  missing the body also carries ``"webauthn": {"publicKey": {...}}``: request options whose
  challenge is bound to the account and certificate and valid once;
- 401 ``{"error": "unauthorized", "message"}`` on any failure (uniform message; certgate's
  one error shape, :func:`proxy.http.messages.error_json`);
- 429 + Retry-After when throttled, 503 + Retry-After when too many logins are pending;
- 400 (bad JSON, with where and why), 403 (cross-site), 405, 415.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from proxy.login.outcome import AuthOutcome
from proxy.login.throttle import StartupRefused
from proxy.login.web import cross_site, iso
from proxy.http.messages import ConnContext, Headers, Local, RequestHead, Response, error_json, json_response

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred

    from proxy.login.service import LoginService

RECEIPT_HEADER = b"Certgate-Auth-Receipt"
MAX_BODY = 16384
_FIELDS = ("account", "password", "totp", "webauthn")


def error(status: int, message: str, headers: Headers | None = None) -> Response:
    """certgate's error body ``{"error": CODE, "message": TEXT}`` (CODE from the status)."""
    return error_json(status, message, headers=headers)


def outcome_response(o: AuthOutcome) -> Response:
    """The HTTP answer for an outcome (see the module docstring)."""
    if o.ok:
        body: dict[str, Any] = {"account": o.account, "methods": sorted_methods(o.proven),
                                "session": {"expires_at": iso(o.session_expires_at) if o.session_expires_at else None}}
        return json_response(200, body, headers=list(o.set_cookie))
    if o.receipt is not None:
        body = {"receipt": {"methods": sorted_methods(o.proven), "account": o.account,
                            "expires_at": iso(o.receipt_expires_at or 0.0)},
                "required_auth_methods": o.required}
        if o.webauthn_options is not None:
            body["webauthn"] = {"publicKey": o.webauthn_options}
        return json_response(401, body, headers=[(RECEIPT_HEADER, o.receipt.encode("ascii"))])
    if o.reason == "throttled":
        return error(429, o.public_message, [(b"Retry-After", str(o.retry_after).encode())])
    if o.reason in ("busy", "session-store-unavailable"):
        return error(503, o.public_message, [(b"Retry-After", str(o.retry_after or 1).encode())])
    if o.reason == "session-limit":
        return error(403, o.public_message)
    return error(401, o.public_message, [(b"WWW-Authenticate", b'Certgate realm="certgate"')])


def sorted_methods(methods: Any) -> list[str]:
    from proxy.login.factors import ordered

    return ordered(methods)


def parse_body(body: bytes) -> dict[str, str]:
    """The request's fields; ValueError says what is wrong and where."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"body is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"body is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("body must be a JSON object")
    for k, v in obj.items():
        if k not in _FIELDS:
            raise ValueError(f"unknown field {k!r} (known: {', '.join(_FIELDS)})")
        if k == "webauthn" and isinstance(v, dict):
            obj[k] = json.dumps(v, separators=(",", ":"))
        elif k == "webauthn" and not isinstance(v, str):
            raise ValueError("field 'webauthn' must be the credential's JSON object")
        elif not isinstance(v, str):
            raise ValueError(f"field {k!r} must be a string")
    if not obj.get("account"):
        raise ValueError("field 'account' is required")
    return obj


class AuthApi:
    """The gate endpoint for ``/.certgate/api/auth``."""

    def __init__(self, login: "LoginService") -> None:
        self.login = login

    def __call__(self, head: RequestHead, conn: ConnContext) -> Response | Local:
        if head.method != b"POST":
            return error(405, "Use POST.", [(b"Allow", b"POST")])
        ctype = (head.get(b"content-type") or b"").split(b";", 1)[0].strip().lower()
        if ctype != b"application/json":
            return error(415, "Content-Type must be application/json.")
        why = cross_site(head, conn)
        if why is not None:
            self.login.audit.record("login", "deny", "cross-site", fingerprint=conn.identity.fingerprint,
                                    client_ip=conn.identity.client_ip, detail=why)
            return error(403, "Cross-site login requests are refused.")
        return Local(self._handle, max_body=MAX_BODY)

    def _handle(self, head: RequestHead, body: bytes, conn: ConnContext) -> "Response | Deferred[Response]":
        try:
            fields = parse_body(body)
        except ValueError as e:
            return error(400, str(e))
        raw = head.get(RECEIPT_HEADER)
        receipt = raw.decode("latin-1").strip() if raw is not None else None
        login = self.login
        d = login.authenticate_with_slot(account=fields["account"], conn=conn, password=fields.get("password"),
                                         totp=fields.get("totp"), receipt=receipt, webauthn=fields.get("webauthn"))
        return d.addCallback(outcome_response)


__all__ = ["AuthApi", "RECEIPT_HEADER", "StartupRefused", "error", "outcome_response", "parse_body"]
