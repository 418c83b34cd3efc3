"""The seams between certgate's parts, as :class:`typing.Protocol` s (checked by mypy, no runtime cost).

One module, imported by the parts that *use* a seam, so a consumer names what it needs
without importing (or being able to reach into) the implementation, and so no seam adds an
import circle: this module imports nothing from ``proxy`` at run time.

- :class:`Clock` — the reactor's time (``IReactorTime``): ``twisted.internet.task.Clock`` in
  unit tests, the reactor in the gateway. :class:`Seconds` where only the time is read;
  :class:`ThreadingClock` where results come back from a worker thread.
- :class:`AuditSink` — :class:`proxy.observe.audit.Audit`.
- :class:`MetricsRegistry` — :class:`proxy.observe.metrics.Metrics`.
- :class:`Sessions` — :class:`proxy.sessions.manager.SessionManager`, as the gate, the login,
  the front doors, the session endpoints and the admin API use it.
- :class:`RequestGate` — :class:`proxy.gate.decide.Gate`, as the HTTP engine asks it.
- :class:`SessionStore` / :class:`BlockingStore` — the store's two faces, defined with the
  store's contract in :mod:`proxy.stores.interface` (re-exported here).
- :class:`FrontDoor` — a login front door (Cockpit, JOC).

Each Protocol lists what the code calls, not everything an implementation offers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Union

from proxy.stores.interface import IBlockingStore as BlockingStore
from proxy.stores.interface import ISessionStore as SessionStore

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IDelayedCall

    from proxy.config import Route
    from proxy.http.messages import ConnContext, Decision, Headers, RequestHead
    from proxy.listener.identity import ConnectionIdentity
    from proxy.sessions.manager import SessionCheck
    from proxy.sessions.seams import SessionSettings
    from proxy.stores.interface import SessionRecord

__all__ = ["AuditSink", "BlockingStore", "Clock", "DecisionOrDeferred", "Endpoint", "FrontDoor", "MetricChild", "MetricFamily",
           "MetricsRegistry", "RequestGate", "Seconds", "SessionStore", "Sessions", "ThreadingClock"]

DecisionOrDeferred = Union["Decision", "Deferred[Decision]"]
#: a handler of an exact path under ``/.certgate/`` (the gate's endpoints)
Endpoint = Callable[["RequestHead", "ConnContext"], DecisionOrDeferred]


class Seconds(Protocol):
    """Something that tells the time: epoch seconds from the injected clock."""

    def seconds(self) -> float: ...


class Clock(Protocol):
    """The reactor's time as certgate uses it (``IReactorTime``): now, and a call later.

    Every deadline and timer in the gateway goes through one of these, so unit tests drive
    them with ``twisted.internet.task.Clock``.
    """

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall: ...


class ThreadingClock(Clock, Protocol):
    """A clock that can also take work back from other threads (the reactor, for thread pools)."""

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kw: Any) -> None: ...


class AuditSink(Protocol):
    """Where authentication decisions are recorded (one JSON line each)."""

    def record(self, event: str, decision: str, reason: str, **fields: Any) -> dict[str, Any]: ...


class MetricChild(Protocol):
    """One labelled series of a counter or histogram."""

    def inc(self, amount: float = 1.0) -> None: ...

    def observe(self, value: float) -> None: ...


class MetricFamily(Protocol):
    """A counter or histogram; ``labels(...)`` picks a series (no arguments: the only one)."""

    def labels(self, *values: str) -> Any: ...


class MetricsRegistry(Protocol):
    """The metrics registry the parts declare their counters, histograms and gauges in."""

    def counter(self, name: str, help_text: str, labelnames: tuple[str, ...] = (), *,
                reactor_only: bool = False) -> MetricFamily: ...

    def histogram(self, name: str, help_text: str, labelnames: tuple[str, ...] = (),
                  buckets: tuple[float, ...] = ..., *, reactor_only: bool = False) -> MetricFamily: ...

    def gauge(self, name: str, help_text: str, labelnames: tuple[str, ...],
              fn: Callable[[], Iterable[tuple[tuple[str, ...], float]]], shared: bool = False) -> None: ...


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
    def clock(self) -> Seconds: ...

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


class RequestGate(Protocol):
    """Decides each request head: a local answer, a forward upstream, or a Deferred of one."""

    def decide(self, head: RequestHead, conn: ConnContext) -> DecisionOrDeferred: ...


class FrontDoor(Protocol):
    """A login front door (Cockpit's /cockpit/login, JOC's login API)."""

    def matches(self, head: RequestHead, route: Route) -> bool: ...

    def decide(self, head: RequestHead, conn: ConnContext, route: Route) -> DecisionOrDeferred: ...
