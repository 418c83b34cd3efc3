"""The seams above the HTTP engine, as :class:`typing.Protocol` s (checked by mypy, no runtime cost).

One module, imported by the parts that *use* a seam (the gate, the sessions, the login, the front
doors, the admin API, the wiring), so a consumer names what it needs without importing (or being
able to reach into) the implementation. It sits above the engine and the listener, whose values it
names (``RequestHead``, ``ConnectionIdentity``), and below every part that uses it; it imports
nothing above itself, not even for annotations.

- :class:`Sessions` — :class:`proxy.sessions.manager.SessionManager`, as the gate, the login,
  the front doors, the session endpoints and the admin API use it; :class:`SessionCheck` is its
  answer, :class:`SessionSettings` the ``[sessions]`` keys its rules read.
- :class:`FrontDoor` — a login front door (Cockpit, JOC); :data:`Endpoint` — a session endpoint.
- Handed on from the layers below, so the parts above have one place to import seams from:
  :class:`RequestGate` and :data:`DecisionOrDeferred` (the engine's, :mod:`proxy.http.messages`),
  :class:`AuditSink` and the metrics Protocols (:mod:`proxy.observe.seams`),
  :class:`SessionStore` / :class:`BlockingStore` (the store's two faces, :mod:`proxy.stores.interface`).
  The clock is :class:`proxy.clock.Clock`.

Each Protocol lists what the code calls, not everything an implementation offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from proxy.http.messages import DecisionOrDeferred, RequestGate
from proxy.observe.seams import AuditSink, MetricChild, MetricFamily, MetricsRegistry
from proxy.stores.interface import IBlockingStore as BlockingStore
from proxy.stores.interface import ISessionStore as SessionStore
from proxy.stores.interface import SessionRecord

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred

    from proxy.clock import Clock
    from proxy.config import Route
    from proxy.http.messages import ConnContext, Headers, RequestHead
    from proxy.listener.identity import ConnectionIdentity

__all__ = ["AuditSink", "BlockingStore", "DecisionOrDeferred", "EndSettings", "Endpoint", "FrontDoor", "MetricChild",
           "MetricFamily", "MetricsRegistry", "RequestGate", "SessionCheck", "SessionSettings", "SessionStore",
           "Sessions"]

#: a handler of an exact path under ``/.certgate/`` (the gate's endpoints)
Endpoint = Callable[["RequestHead", "ConnContext"], DecisionOrDeferred]


@dataclass(frozen=True, slots=True)
class SessionCheck:
    """The answer of :meth:`Sessions.check` and friends.

    ``ok`` with the current ``record``; otherwise ``reason`` is a stable code
    (``session-unknown``, ``session-ended``, ``grace-expired``, ``long-grace-expired``,
    ``idle-timeout``, ``max-lifetime``, ``session-cert-mismatch``, ``certificate-invalid``,
    ``fresh-proof-required``), and ``ended`` names why the session is over when it is.
    """

    ok: bool
    record: SessionRecord | None = None
    reason: str | None = None
    ended: str | None = None


class EndSettings(Protocol):
    """The ``[sessions]`` keys that decide when a session ends."""

    @property
    def grace(self) -> float: ...

    @property
    def long_grace(self) -> float: ...

    @property
    def idle_timeout(self) -> float: ...

    @property
    def max_lifetime(self) -> float: ...


class SessionSettings(EndSettings, Protocol):
    """The ``[sessions]`` keys the session manager reads (besides ``account_limits``, ``max_per_account``
    and ``on_limit``, read with their defaults)."""

    @property
    def cookie_name(self) -> str: ...

    @property
    def presence_interval(self) -> float: ...


class Sessions(Protocol):
    """The trusted-session rules (the session manager) as the rest of the gateway uses them.

    Operations that reach the store return Deferreds; none blocks. ``settings`` are the
    ``[sessions]`` keys the rules come from; ``store`` the store they keep records in.
    """

    @property
    def settings(self) -> SessionSettings: ...

    @property
    def store(self) -> SessionStore: ...

    @property
    def clock(self) -> Clock: ...

    def session_id(self, head: RequestHead) -> str | None: ...

    def clear_cookie_headers(self) -> Headers: ...

    def ends_at(self, rec: SessionRecord) -> tuple[float, str]: ...

    def open(self, identity: ConnectionIdentity, account: str, methods: Any, client_ip: str) -> Deferred[Any]: ...

    def check(self, session_id: str, identity: ConnectionIdentity, client_ip: str, *,
              activity: bool = True) -> Deferred[SessionCheck]: ...

    def fresh_proof(self, session_id: str, identity: ConnectionIdentity) -> Deferred[SessionCheck]: ...

    def activate_long(self, session_id: str, identity: ConnectionIdentity) -> Deferred[SessionCheck]: ...

    def deactivate_long(self, session_id: str, identity: ConnectionIdentity) -> Deferred[SessionCheck]: ...

    def end(self, session_id: str, reason: str) -> Deferred[Any]: ...

    def end_where(self, *, account: str | None = None, fingerprint: str | None = None,
                  reason: str) -> Deferred[Any]: ...

    def revalidate(self, still_valid: Callable[[SessionRecord], bool], reason: str) -> Deferred[Any]: ...

    def use_metrics(self, metrics: MetricsRegistry) -> None: ...


class FrontDoor(Protocol):
    """A login front door (Cockpit's /cockpit/login, JOC's login API)."""

    def matches(self, head: RequestHead, route: Route) -> bool: ...

    def decide(self, head: RequestHead, conn: ConnContext, route: Route) -> DecisionOrDeferred: ...
