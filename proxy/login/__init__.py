"""certgate's login: factor rules, passwords (scrypt), TOTP, receipts, throttling, page and JSON API.

Only re-exports; see :mod:`proxy.login.service` for the order of checks.
"""

from proxy.login.outcome import AuthOutcome
from proxy.login.service import LoginService

__all__ = ["AuthOutcome", "LoginService"]
