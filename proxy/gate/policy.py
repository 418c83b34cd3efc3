"""The policy a ``Forward`` carries to the HTTP layer: body limits by authentication, presence injection.

:class:`ForwardPolicy` is made once from the configuration; :meth:`ForwardPolicy.apply` fills
``Forward.body`` and ``Forward.rewrite`` on every forward the gate returns. Both values are
shared (made once), so applying the policy allocates nothing per request.

- ``body``: a request forwarded with an account or a session is *authenticated*: its body
  streams, bounded by ``[limits] max_body`` (0: no limit). Anything else is bounded by
  ``max_body_unauthenticated`` and a chunked body is collected before it goes upstream.
- ``rewrite``: a ``GET`` within a session (or a pre-session page marked ``presence_await``) on a
  route whose kind ``[sessions] inject_presence_script`` covers gets the presence script added
  to its 200 ``text/html`` answer (:class:`proxy.sessions.presence.HtmlInjector`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.http.messages import BodyRule, Forward, Headers, RequestHead
from proxy.sessions.presence import HtmlInjector, should_inject
from proxy.sessions.presence_rules import presence_kinds

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config


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


class ForwardPolicy:
    """Fills ``body`` and ``rewrite`` of the gate's ``Forward`` decisions (see the module docstring)."""

    __slots__ = ("authenticated", "anonymous", "_kinds", "_in_session", "_awaiting")

    def __init__(self, config: "Config") -> None:
        limits, sessions = config.limits, config.sessions
        self.authenticated = BodyRule(limit=int(limits.max_body) or None, stream=True)
        self.anonymous = BodyRule(limit=int(limits.max_body_unauthenticated), stream=False)
        interval = float(sessions.presence_interval or 30.0)
        self._kinds = presence_kinds(sessions.inject_presence_script)
        on = self._kinds is None or bool(self._kinds)
        self._in_session = PresenceInjection(interval, await_session=False) if on else None
        self._awaiting = PresenceInjection(interval, await_session=True) if on else None

    def apply(self, fwd: Forward, head: RequestHead) -> Forward:
        """``fwd`` with its body rule and response rewrite set for ``head``; returns ``fwd``."""
        authed = fwd.account is not None or fwd.session_id is not None
        fwd.body = self.authenticated if authed else self.anonymous
        inj = self._in_session
        if inj is not None and head.method == b"GET" and (fwd.session_id is not None or fwd.presence_await):
            kinds = self._kinds
            if kinds is None or fwd.route.kind in kinds:
                fwd.rewrite = inj if fwd.session_id is not None else self._awaiting
        return fwd

    def settle(self, decision: Any, head: RequestHead) -> Any:
        """A Deferred decision's callback: :meth:`apply` to a Forward, anything else unchanged."""
        if isinstance(decision, Forward):
            return self.apply(decision, head)
        return decision
