"""What the session manager needs of the parts around it, as Protocols (typing only).

The gateway wires the real parts (``proxy.http.tunnel.TunnelRegistry``, ``proxy.observe.audit.Audit``);
tests pass fakes with the same shape (``tests.harness.fakes.FakeTunnels``, ...). The clock is
:class:`proxy.clock.Clock`; the ``[sessions]`` keys are :class:`proxy.interfaces.SessionSettings`.
"""

from __future__ import annotations

from typing import Any, Protocol


class Tunnels(Protocol):
    """Closes the WebSockets of a session (``proxy.http.tunnel.TunnelRegistry``)."""

    def close_session(self, session_id: str, code: int = ..., reason: str = ...) -> int: ...


class AuditLog(Protocol):
    """Records one audit event (``proxy.observe.audit.Audit``)."""

    def record(self, event: str, decision: str, reason: str, **fields: Any) -> object: ...
