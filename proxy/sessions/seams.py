"""What the session manager needs of the parts around it, as Protocols (typing only).

The gateway wires the real parts (the reactor, ``proxy.http.tunnel.TunnelRegistry``,
``proxy.observe.audit.Audit``, the ``[sessions]`` config section); tests pass fakes with the
same shape (``twisted.internet.task.Clock``, ``proxy.stores.testing.FakeTunnels``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IDelayedCall


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


class Clock(Protocol):
    """The reactor's time (``twisted.internet.task.Clock`` in tests)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object], *args: object,  # noqa: N802
                  **kw: object) -> "IDelayedCall": ...


class Tunnels(Protocol):
    """Closes the WebSockets of a session (``proxy.http.tunnel.TunnelRegistry``)."""

    def close_session(self, session_id: str, code: int = ..., reason: str = ...) -> int: ...


class AuditLog(Protocol):
    """Records one audit event (``proxy.observe.audit.Audit``)."""

    def record(self, event: str, decision: str, reason: str, **fields: Any) -> object: ...


class SessionSettings(EndSettings, Protocol):
    """The ``[sessions]`` keys the manager reads (besides ``account_limits``, ``max_per_account``
    and ``on_limit``, read with their defaults)."""

    @property
    def cookie_name(self) -> str: ...

    @property
    def presence_interval(self) -> float: ...
