"""The access rules (``[access:NAME]``: CA, CN list, client IP ranges) applied at the front doors.

The gate applies them to forwarded requests; a front door answers before that, so it asks the
same single source (``trust.access.check``) before letting a login reach the upstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.http.messages import ConnContext

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config


def access_refusal(config: Config, conn: ConnContext) -> str | None:
    """None when the access rules allow this connection (or none are configured), else why not.

    A connection without a certificate is left to the login checks (which refuse it anyway).
    """
    rules = config.access_rules
    ident = conn.identity
    if not rules or not ident.presented:
        return None
    from trust.access import check  # the single source of access decisions

    decision = check(rules, ident.verdict, ident.account, ident.client_ip)
    return None if decision.allowed else decision.reason
