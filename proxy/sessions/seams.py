"""What the session manager needs of the tunnels, as a Protocol (typing only).

The gateway wires ``proxy.http.tunnel.TunnelRegistry``; tests pass ``tests.harness.fakes.FakeTunnels``.
The manager's other seams are shared: the clock is :class:`proxy.clock.Clock`, the audit log
:class:`proxy.observe.seams.AuditSink`, the ``[sessions]`` keys :class:`proxy.interfaces.SessionSettings`.
"""

from __future__ import annotations

from typing import Protocol


class Tunnels(Protocol):
    """Closes the WebSockets of a session (``proxy.http.tunnel.TunnelRegistry``)."""

    def close_session(self, session_id: str, code: int = ..., reason: str = ...) -> int: ...
