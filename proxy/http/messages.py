"""Values passed between the HTTP layer (``proxy.http.connection``) and the gate (``proxy.gate.decide``).

The HTTP layer parses and frames bytes; the gate decides. These types are the whole
interface between them, so either side can be tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Union

from trust.escape import safe_json

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred

    from proxy.config import Route
    from proxy.listener.identity import ConnectionIdentity

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class RequestHead:
    """A parsed request head. ``headers`` keep wire order, repeats and original case.

    ``target`` is the canonical request target (``proxy.paths.canonical_target``): the one value
    every decision uses and the upstream receives. Code that builds heads itself (tests) passes
    a canonical target or goes through ``canonical_target`` first.
    """

    method: bytes
    target: bytes
    version: bytes  # b"1.1" or b"1.0"
    headers: Headers
    upgrade: bool = False  # a Connection: upgrade + Upgrade request
    keep_alive: bool = True
    has_body: bool = False

    @property
    def path(self) -> str:
        """The path (no query) exactly as it is forwarded: ``target`` is canonical (``proxy.paths``)
        when the HTTP layer made the head, so this is ASCII with only reserved or non-ASCII bytes
        still ``%XX``-escaped. It is not decoded further: compare it with canonical paths."""
        raw = self.target.split(b"?", 1)[0]
        return raw.decode("latin-1")

    @property
    def query(self) -> str:
        parts = self.target.split(b"?", 1)
        return parts[1].decode("latin-1") if len(parts) == 2 else ""

    def get(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def get_all(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` in wire order."""
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name`` across all Cookie headers; None if absent or repeated.

        A repeated cookie name (in one header or across several) is treated as absent: a
        planted duplicate must not win. Values are not unquoted.
        """
        found: list[str] = []
        target = name.encode("latin-1")
        for raw in self.get_all(b"cookie"):
            for part in raw.split(b";"):
                k, sep, v = part.strip().partition(b"=")
                if sep and k == target:
                    found.append(v.decode("latin-1"))
        return found[0] if len(found) == 1 else None

    def wants_html(self) -> bool:
        """True for browser navigations (Accept prefers text/html)."""
        accept = (self.get(b"accept") or b"").lower()
        return b"text/html" in accept


@dataclass(slots=True)
class ConnContext:
    """Per-connection state the gate may read (identity) and the HTTP layer owns."""

    identity: "ConnectionIdentity"
    connected_at: float
    requests: int = 0
    scheme: str = "https"
    local_host: str = ""
    local_port: int = 0


@dataclass(slots=True)
class Response:
    """A locally generated response. ``Content-Length`` is added by the HTTP layer."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    reason: bytes | None = None
    close: bool = False  # close the connection after this response


OnResponse = Callable[[int, Headers], Headers]


@dataclass(frozen=True, slots=True)
class BodyRule:
    """How the HTTP layer treats a forwarded request body: the gate's choice, by who is authenticated.

    ``limit``: the most body bytes accepted (more is 413); None: no limit. ``stream``: the body
    goes upstream as it arrives; False: a chunked body is first collected (bounded by ``limit``)
    and sent with ``Content-Length``, so nothing reaches the upstream before it is complete.
    """

    limit: int | None
    stream: bool


#: The rule of a ``Forward`` the gate did not give one: no body bytes at all (fails closed).
NO_BODY = BodyRule(limit=0, stream=False)


class BodyRewriter(Protocol):
    """Rewrites one response body as it streams: ``feed`` returns what to send now, ``finish`` the rest."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class ResponseRewrite(Protocol):
    """Chooses, per response head, whether its body is rewritten (e.g. the presence script added).

    ``start`` returns a fresh :class:`BodyRewriter` for a body it rewrites, else None. A rewritten
    body changes length: the HTTP layer then sends it chunked (or close-delimited).
    """

    def start(self, status: int, headers: Headers) -> BodyRewriter | None: ...


@dataclass(slots=True)
class Forward:
    """Forward the request to ``route`` after header hygiene.

    ``set_headers`` are added after all client copies of identity and hop-by-hop headers
    were removed; a name in ``set_headers`` also removes every client copy of that name.
    ``on_response(status, headers)`` may return headers to add to the response.
    ``session_id`` ties a WebSocket tunnel to its trusted session. ``on_client_data`` sees
    (never changes) every client byte of a WebSocket tunnel, e.g. to spot Cockpit's logout.
    ``presence_await``: a page forwarded *before* any session (a single-page app's login
    page, e.g. JOC's) gets the presence script in its waiting mode (401 = "not logged in yet").

    Policy arrives here as data, set by the gate (``proxy.gate.policy``) on every Forward it
    returns: ``body`` (limit and streaming of the request body) and ``rewrite`` (a response-body
    rewriter, e.g. presence-script injection). The HTTP layer applies them and decides nothing
    by identity itself.
    """

    route: "Route"
    set_headers: Headers = field(default_factory=list)
    session_id: str | None = None
    on_response: OnResponse | None = None
    account: str | None = None
    on_client_data: Callable[[bytes], None] | None = None
    presence_await: bool = False
    body: BodyRule = NO_BODY
    rewrite: ResponseRewrite | None = None


class LocalHandler(Protocol):
    def __call__(self, head: RequestHead, body: bytes, conn: ConnContext
                 ) -> "Response | Deferred[Response]": ...


@dataclass(slots=True)
class Local:
    """Read the request body (at most ``max_body`` bytes, else 413) and call ``handler``."""

    handler: LocalHandler
    max_body: int = 65536


Decision = Union[Response, Local, Forward]
#: what the gate answers a request head with: a decision now, or one to come
DecisionOrDeferred = Union[Decision, "Deferred[Decision]"]


class RequestGate(Protocol):
    """The gate as the HTTP engine asks it (:class:`proxy.gate.decide.Gate`): one decision per head."""

    def decide(self, head: RequestHead, conn: ConnContext) -> DecisionOrDeferred: ...


def text_response(status: int, text: str, *, close: bool = False, headers: Headers | None = None) -> Response:
    """A small ``text/plain`` response."""
    hs: Headers = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Cache-Control", b"no-store")]
    return Response(status, hs + (headers or []), text.encode("utf-8"), close=close)


#: certgate's one JSON error shape: ``{"error": CODE, "message": TEXT, ...}`` where CODE is a
#: stable lower-case reason (e.g. ``session-ended``) and TEXT a sentence for a person.
ERROR_CODES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 409: "conflict", 413: "too-large", 415: "unsupported-media-type",
               429: "too-many-requests", 500: "internal-error", 502: "bad-gateway", 503: "service-unavailable",
               504: "gateway-timeout"}


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    """The JSON error object every certgate endpoint answers with (extra keys after the two)."""
    return {"error": code, "message": message, **extra}


def error_json(status: int, message: str, *, code: str | None = None, headers: Headers | None = None,
               **extra: object) -> Response:
    """An ``application/json`` error response in the one shape (code defaults from the status)."""
    return json_response(status, error_body(code or ERROR_CODES.get(status, "error"), message, **extra),
                         headers=headers)


def json_response(status: int, obj: object, *, headers: Headers | None = None) -> Response:
    """A ``application/json`` response."""
    import json

    hs: Headers = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store")]
    return Response(status, hs + (headers or []), json.dumps(safe_json(obj), separators=(",", ":")).encode())
