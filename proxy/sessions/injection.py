"""Presence-script injection as a response rewrite the gate hands to the HTTP engine.

:class:`PresenceRewrites` is made once from ``[sessions]`` by the service wiring and given to the
gate (``Gate(rewrites=...)``), which puts its choice on each ``Forward`` (``Forward.rewrite``):
a ``GET`` within a session (or a pre-session page marked ``presence_await``) on a route whose kind
``inject_presence_script`` covers gets the presence script added to its 200 ``text/html`` answer
(:class:`proxy.sessions.presence.HtmlInjector`). The two rewrites are shared: choosing one
allocates nothing per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.http.messages import Forward, Headers, RequestHead
from proxy.sessions.presence import HtmlInjector, should_inject
from proxy.config.presence import presence_kinds

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import SessionsSection


class PresenceInjection:
    """A :class:`proxy.http.messages.ResponseRewrite`: the presence script into 200 HTML pages."""

    __slots__ = ("interval", "await_session")

    def __init__(self, interval: float, await_session: bool) -> None:
        self.interval = interval
        self.await_session = await_session

    def start(self, status: int, headers: Headers) -> HtmlInjector | None:
        """A fresh injector for a page that gets the script; None for anything else."""
        if should_inject(status, headers):
            return HtmlInjector(self.interval, await_session=self.await_session)
        return None


class PresenceRewrites:
    """Chooses the presence rewrite of a Forward (see the module docstring); None when it gets none."""

    __slots__ = ("_kinds", "_in_session", "_awaiting")

    def __init__(self, sessions: "SessionsSection") -> None:
        interval = float(sessions.presence_interval or 30.0)
        self._kinds = presence_kinds(sessions.inject_presence_script)
        on = self._kinds is None or bool(self._kinds)
        self._in_session = PresenceInjection(interval, await_session=False) if on else None
        self._awaiting = PresenceInjection(interval, await_session=True) if on else None

    def for_forward(self, fwd: Forward, head: RequestHead) -> PresenceInjection | None:
        inj = self._in_session
        if inj is None or head.method != b"GET" or (fwd.session_id is None and not fwd.presence_await):
            return None
        kinds = self._kinds
        if kinds is not None and fwd.route.kind not in kinds:
            return None
        return inj if fwd.session_id is not None else self._awaiting
