"""The admin HTTP listener: health, Prometheus metrics, trusted sessions (list and revoke).

``[admin] port`` (0 = off) on ``[admin] address`` (default 127.0.0.1). With ``[admin]
token_file`` every endpoint except ``/health`` needs ``Authorization: Bearer <token>``; a
listener on a non-loopback address *requires* a token (it refuses to start otherwise).

- ``GET /health`` -> 200 ``{"status": "ok"}`` or ``{"status": "degraded", "problems": [...]}``
  (the last trust reload failed and the previous store is still in use, or the session store
  is unreachable); ``?strict=1`` answers 503 when degraded (for load balancers);
- ``GET /metrics`` -> Prometheus text format 0.0.4;
- ``GET /sessions`` -> ``{"sessions": [...]}``, live ones (``?all=1`` adds ended/expired);
- ``DELETE /sessions/ID`` (the full id or a unique prefix of at least 8 characters),
  ``DELETE /sessions?account=A`` and/or ``?fingerprint=F`` -> ``{"revoked": N}``; the sessions
  end at once with their WebSockets in this process (other worker processes within the
  sweep interval).

:class:`AdminAPI` is pure request -> response logic; :func:`admin_service` puts it on a
twisted.web ``Site``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs

from twisted.internet.defer import inlineCallbacks, maybeDeferred

from proxy.clock import rfc3339
from proxy.paths import TargetError, canonical_target
from proxy.sessions.manager import describe
from trust.escape import safe_json
from trust.problems import Problem

if TYPE_CHECKING:  # pragma: no cover
    from typing import Generator
    from twisted.internet.defer import Deferred
    from proxy.config import Config
    from proxy.interfaces import BlockingStore, Sessions, SessionStore
    from proxy.observe.metrics import Metrics
    from proxy.stores.interface import SessionRecord

HealthFn = Callable[[], "tuple[bool, str | None]"]


@dataclass
class AdminResponse:
    status: int
    content_type: bytes
    body: bytes
    headers: list[tuple[bytes, bytes]]


def _json(status: int, obj: object, headers: list[tuple[bytes, bytes]] | None = None) -> AdminResponse:
    return AdminResponse(status, b"application/json", json.dumps(safe_json(obj), indent=1).encode("utf-8") + b"\n",
                         headers or [])


def read_token(path: Any) -> str:
    """The bearer token in ``path`` (surrounding whitespace removed); ValueError when unusable."""
    try:
        token = open(path, encoding="utf-8").read().strip()
    except OSError as e:
        raise ValueError(f"[admin] token_file: cannot read {path}: {e.strerror}") from None
    if len(token) < 16:
        raise ValueError(f"[admin] token_file: {path} holds a token shorter than 16 characters")
    return token


def admin_problems(cfg: Config) -> list[Problem]:
    """A readable token of 16+ characters when set; a token whenever the address is not loopback."""
    if not cfg.admin.port:
        return []
    if cfg.admin.token_file:
        try:
            read_token(cfg.admin.token_file)
        except ValueError as e:
            return [Problem("admin", "token_file", str(e).removeprefix("[admin] token_file: "))]
        return []
    if not is_loopback(cfg.admin.address):
        return [Problem("admin", "address", f"{cfg.admin.address} is not a loopback address; set [admin] "
                        "token_file so the admin API needs a bearer token")]
    return []


def is_loopback(address: str) -> bool:
    """True for a loopback IP address (127.0.0.0/8, ::1); False for anything else, a host name too."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def find_sessions(store: BlockingStore, ref: str) -> list[SessionRecord]:
    """Records whose id equals ``ref`` or starts with it (``ref`` of at least 8 characters)."""
    ref = ref.strip().lower()
    if len(ref) < 8:
        raise ValueError("a session id prefix needs at least 8 characters")
    exact = store.get(ref)
    if exact is not None:
        return [exact]
    return [r for r in store.list() if r.id.startswith(ref)]


@inlineCallbacks
def find_sessions_async(store: SessionStore, ref: str) -> Generator[Deferred[Any], Any, list[SessionRecord]]:
    """:func:`find_sessions` on an asynchronous store (a Deferred)."""
    ref = ref.strip().lower()
    if len(ref) < 8:
        raise ValueError("a session id prefix needs at least 8 characters")
    exact = yield store.get(ref)
    if exact is not None:
        return [exact]
    return [r for r in (yield store.list()) if r.id.startswith(ref)]


class AdminAPI:
    """Admin request handling. ``health`` returns (healthy, last_error) of the trust reload."""

    def __init__(self, *, sessions: Sessions, metrics: Metrics, health: HealthFn, token: str | None = None) -> None:
        self.sessions = sessions
        self.metrics = metrics
        self.health = health
        self.token = token

    def _authorized(self, authorization: bytes | None) -> bool:
        if self.token is None:
            return True
        if not authorization or not authorization.lower().startswith(b"bearer "):
            return False
        return hmac.compare_digest(authorization[7:].strip(), self.token.encode("utf-8"))

    def handle(self, method: bytes, path: bytes, authorization: bytes | None = None) -> Any:
        """Answer one request; ``path`` is the request target as received (query included).
        A Deferred (AdminResponse); a session store failure answers 503 ``session-store-unavailable``.

        Every decision uses its canonical form (``proxy.paths``); a target without one gets 400.
        """
        from proxy.stores.interface import StoreError

        def down(f: Any) -> AdminResponse:
            f.trap(StoreError)
            return _json(503, {"error": "session-store-unavailable", "message": f.getErrorMessage()[:300]},
                         [(b"Retry-After", b"2")])
        return maybeDeferred(self._handle, method, path, authorization).addErrback(down)

    def _handle(self, method: bytes, path: bytes, authorization: bytes | None = None) -> Any:
        try:
            path = canonical_target(path, method)
        except TargetError as e:
            return _json(400, {"error": "bad-request", "message": "request target refused: " + e.reason})
        raw_path, _, raw_query = path.partition(b"?")
        p = raw_path.decode("latin-1").rstrip("/") or "/"
        q = {k: v[-1] for k, v in parse_qs(raw_query.decode("latin-1")).items()}
        if p == "/health" and method in (b"GET", b"HEAD"):
            return self._health(q)
        if not self._authorized(authorization):
            return _json(401, {"error": "unauthorized", "message": "send Authorization: Bearer <token>"},
                         [(b"WWW-Authenticate", b'Bearer realm="certgate-admin"')])
        if p == "/metrics" and method in (b"GET", b"HEAD"):
            from proxy.observe.metrics import CONTENT_TYPE

            return AdminResponse(200, CONTENT_TYPE, self.metrics.render(), [])
        if p == "/sessions":
            if method in (b"GET", b"HEAD"):
                return self._list(q.get("all") in ("1", "true", "yes"))
            if method == b"DELETE":
                return self._revoke_where(q)
            return _json(405, {"error": "method-not-allowed", "message": "use GET or DELETE"},
                         [(b"Allow", b"GET, DELETE")])
        if p.startswith("/sessions/"):
            if method != b"DELETE":
                return _json(405, {"error": "method-not-allowed", "message": "use DELETE"}, [(b"Allow", b"DELETE")])
            return self._revoke_one(p[len("/sessions/"):])
        return _json(404, {"error": "not-found", "message": "no such admin endpoint",
                           "paths": ["/health", "/metrics", "/sessions"]})

    @inlineCallbacks
    def _health(self, q: dict[str, str]) -> Any:
        problems = []
        try:
            healthy, last_error = self.health()
        except Exception as e:
            healthy, last_error = False, f"health check failed: {e}"
        if not healthy:
            problems.append(f"trust reload failed, previous trust store in use: {last_error}")
        try:
            yield self.sessions.store.ping()
        except Exception as e:
            problems.append(f"session store unreachable: {e}")
        if problems:
            status = 503 if q.get("strict") in ("1", "true", "yes") else 200
            return _json(status, {"status": "degraded", "problems": problems})
        return _json(200, {"status": "ok"})

    @inlineCallbacks
    def _list(self, include_all: bool) -> Any:
        now = self.sessions.clock.seconds()
        rows = [describe(r, self.sessions.settings, now) for r in (yield self.sessions.store.list())]
        if not include_all:
            rows = [r for r in rows if r["state"] == "live"]
        rows.sort(key=lambda r: r["created_at"])
        return _json(200, {"now": rfc3339(now), "sessions": rows})

    @inlineCallbacks
    def _revoke_one(self, ref: str) -> Any:
        try:
            found = [r for r in (yield find_sessions_async(self.sessions.store, ref)) if r.ended is None]
        except ValueError as e:
            return _json(400, {"error": "bad-session-id", "message": str(e)})
        if not found:
            return _json(404, {"error": "no-such-session", "message": f"no live session id starts with {ref!r}"})
        if len(found) > 1:
            return _json(409, {"error": "ambiguous", "message": f"{len(found)} sessions start with {ref!r}; "
                               "give more characters"})
        n = int((yield self.sessions.end(found[0].id, "admin-revoke")))
        return _json(200, {"revoked": n, "ids": [found[0].id]})

    @inlineCallbacks
    def _revoke_where(self, q: dict[str, str]) -> Any:
        account, fingerprint = q.get("account"), q.get("fingerprint")
        if account is None and fingerprint is None:
            return _json(400, {"error": "bad-request", "message": "give ?account=A and/or ?fingerprint=F, "
                               "or DELETE /sessions/ID"})
        if False:  # pragma: no cover  (keeps this a generator on the early return above)
            yield None
        n = yield self.sessions.end_where(account=account,
                                    fingerprint=fingerprint.lower().replace(":", "") if fingerprint else None,
                                    reason="admin-revoke")
        return _json(200, {"revoked": n})


def admin_site(api: AdminAPI) -> Any:
    """A twisted.web Site serving ``api`` (no request logging of tokens)."""
    from twisted.web import resource, server

    class _Root(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            def answer(resp: AdminResponse) -> None:
                request.setResponseCode(resp.status)
                request.setHeader(b"Content-Type", resp.content_type)
                request.setHeader(b"Cache-Control", b"no-store")
                for k, v in resp.headers:
                    request.setHeader(k, v)
                if request.method != b"HEAD":
                    request.write(resp.body)
                request.finish()

            def broken(f: Any) -> None:
                request.setResponseCode(500)
                request.finish()
            api.handle(request.method, request.uri, request.getHeader(b"authorization")).addCallbacks(answer, broken)
            return server.NOT_DONE_YET

    site = server.Site(_Root())
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]  # a scrape every 15 s is no log line
    return site


def admin_service(cfg: Config, gw: Any, reactor: Any) -> Any:
    """The admin listener as a twisted Service, from ``cfg.admin`` and the gateway's parts.

    Raises ValueError (with section/key) for an unreadable token file, or a non-loopback
    address without a token.
    """
    from twisted.application.internet import TCPServer

    problems = admin_problems(cfg)
    if problems:
        raise ValueError(str(problems[0]))
    token = read_token(cfg.admin.token_file) if cfg.admin.token_file else None
    parts = gw.parts
    trust = parts.get("trust")

    def health() -> tuple[bool, str | None]:
        if trust is None:
            return True, None
        return bool(getattr(trust, "healthy", True)), getattr(trust, "last_error", None)

    metrics = parts["metrics"]
    if trust is not None:
        metrics.gauge("trust_healthy", "1 when the last trust reload succeeded", (),
                      lambda: [((), 1.0 if getattr(trust, "healthy", True) else 0.0)], shared=True)
    api = AdminAPI(sessions=parts["sessions"], metrics=metrics, health=health, token=token)
    svc = TCPServer(cfg.admin.port, admin_site(api), interface=cfg.admin.address, reactor=reactor)
    svc.setName("admin")
    return svc
