"""``AuthOutcome``: the result of one login attempt, as every login face reads it.

Made by :class:`proxy.login.service.LoginService`; read by the login page, the JSON API and the
front doors. A value only: it checks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AuthOutcome:
    """The result of one login attempt (the order of checks: :mod:`proxy.login.service`)."""

    ok: bool
    account: str
    proven: frozenset[str]
    required: list[list[str]]
    receipt: str | None
    reason: str
    public_message: str
    receipt_expires_at: float | None = None
    session: Any = None  # the SessionRecord opened on success
    set_cookie: list[tuple[bytes, bytes]] = field(default_factory=list)
    session_expires_at: float | None = None
    retry_after: int = 0  # seconds, for ``throttled`` and ``busy``
    webauthn_options: dict[str, Any] | None = None  # request options when a partial success needs the key

    @property
    def partial(self) -> bool:
        return not self.ok and self.receipt is not None

    @property
    def throttled(self) -> bool:
        return self.reason == "throttled"
