"""certgate's trust layer: store, verification, mapping, access rules (never imports Twisted).

Re-exports only, loaded on first use (PEP 562): ``import trust.cli_errors`` or
``import trust.escape`` loads no OpenSSL, so the ``certgate`` command can still point
``OPENSSL_CONF`` at certgate's settings before anything imports ``cryptography``.
See the modules for the contracts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .access import AccessDecision, AccessRule, check
    from .folder import folder_signature
    from .mapping import MappingResult, MappingSettings, account_matches, map_account
    from .problems import Problem
    from .settings import TrustSettings, parse_access_sections, parse_trust_section
    from .store import StoreEntry, StoreProblem, TrustGeneration, TrustStoreError, load_store
    from .verify import Reason, Verdict, VerdictCache, VerifyPolicy

# `verify()` is deliberately not re-exported: the name would shadow the `trust.verify` module.

#: re-exported name -> the module of this package that defines it
_HOME = {
    "AccessDecision": "access", "AccessRule": "access", "check": "access",
    "MappingResult": "mapping", "MappingSettings": "mapping", "account_matches": "mapping",
    "map_account": "mapping",
    "Problem": "problems",
    "TrustSettings": "settings", "parse_access_sections": "settings", "parse_trust_section": "settings",
    "StoreEntry": "store", "StoreProblem": "store", "TrustGeneration": "store", "TrustStoreError": "store",
    "load_store": "store", "folder_signature": "folder",
    "Reason": "verify", "Verdict": "verify", "VerdictCache": "verify", "VerifyPolicy": "verify",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    """Load a re-exported name from its module on first use; other names raise AttributeError."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'trust' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
