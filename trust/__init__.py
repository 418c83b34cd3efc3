"""certgate's trust layer: store, verification, mapping, access rules (never imports Twisted).

Re-exports only; see the modules for the contracts.
"""

from .access import AccessDecision, AccessRule, check
from .mapping import MappingResult, MappingSettings, account_matches, map_account
from .problems import Problem
from .settings import TrustSettings, parse_access_sections, parse_trust_section
from .folder import folder_signature
from .store import StoreEntry, StoreProblem, TrustGeneration, TrustStoreError, load_store
from .verify import Reason, Verdict, VerdictCache, VerifyPolicy

# `verify()` is deliberately not re-exported: the name would shadow the `trust.verify` module.

__all__ = [
    "AccessDecision", "AccessRule", "MappingResult", "MappingSettings", "Problem", "Reason", "StoreEntry",
    "StoreProblem", "TrustGeneration", "TrustSettings", "TrustStoreError", "Verdict", "VerdictCache",
    "VerifyPolicy", "account_matches", "check", "folder_signature", "load_store", "map_account",
    "parse_access_sections", "parse_trust_section",
]
