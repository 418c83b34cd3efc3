"""The policy a ``Forward`` carries to the HTTP layer: body limits by authentication, response rewrites.

:class:`ForwardPolicy` is made once from the configuration; :meth:`ForwardPolicy.apply` fills
``Forward.body`` and ``Forward.rewrite`` on every forward the gate returns. The values are
shared (made once), so applying the policy allocates nothing per request.

- ``body``: a request forwarded with an account or a session is *authenticated*: its body
  streams, bounded by ``[limits] max_body`` (0: no limit). Anything else is bounded by
  ``max_body_unauthenticated`` and a chunked body is collected before it goes upstream.
- ``rewrite``: chosen by ``rewrites`` (the presence script,
  :class:`proxy.sessions.injection.PresenceRewrites`, handed in by the service wiring); none
  without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from proxy.http.messages import BodyRule, Forward, RequestHead, ResponseRewrite

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config


class RewriteChooser(Protocol):
    """Chooses the response rewrite of a Forward (e.g. presence-script injection), or None."""

    def for_forward(self, fwd: Forward, head: RequestHead) -> ResponseRewrite | None: ...


class ForwardPolicy:
    """Fills ``body`` and ``rewrite`` of the gate's ``Forward`` decisions (see the module docstring)."""

    __slots__ = ("authenticated", "anonymous", "_rewrites")

    def __init__(self, config: "Config", rewrites: RewriteChooser | None = None) -> None:
        limits = config.limits
        self.authenticated = BodyRule(limit=int(limits.max_body) or None, stream=True)
        self.anonymous = BodyRule(limit=int(limits.max_body_unauthenticated), stream=False)
        self._rewrites = rewrites

    def apply(self, fwd: Forward, head: RequestHead) -> Forward:
        """``fwd`` with its body rule and response rewrite set for ``head``; returns ``fwd``."""
        fwd.body = self.authenticated if fwd.account is not None or fwd.session_id is not None else self.anonymous
        rw = self._rewrites
        if rw is not None:
            fwd.rewrite = rw.for_forward(fwd, head)
        return fwd

    def settle(self, decision: Any, head: RequestHead) -> Any:
        """A Deferred decision's callback: :meth:`apply` to a Forward, anything else unchanged."""
        if isinstance(decision, Forward):
            return self.apply(decision, head)
        return decision
