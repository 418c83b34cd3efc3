"""Factor rules: which combinations of ``tls-cert``, ``password``, ``totp`` and ``webauthn`` open a session.

Pure functions over Keystone's ``required_auth_methods`` shape (a list of rules, each a list
of method names; any one rule suffices). Semantics, following Keystone's
``UserMFARulesValidator`` and stricter where certgate's design asks for it:

- a rule is *satisfied* when the set of proven methods is a superset of the rule;
- an *enrolled* factor is never skippable: ``totp`` and ``webauthn`` need enrolment; rules
  naming a factor the account has not enrolled are unreachable and dropped; of the others,
  when some rule names an enrolled factor, only the rules naming one apply
  (``effective_rules``): an account with a TOTP secret or a security key cannot log in
  without one of them;
- the ``required_auth_methods`` answer of a partial success lists the effective rules that
  overlap what was proven (Keystone's ``ReceiptModel.required_methods``), i.e. the rules still
  reachable from here; every certgate rule contains ``tls-cert`` (the config refuses others).

Nothing here checks a factor; callers pass what they proved.
"""

from __future__ import annotations

from typing import Iterable, Sequence

TLS_CERT = "tls-cert"
PASSWORD = "password"
TOTP = "totp"
WEBAUTHN = "webauthn"
METHODS: tuple[str, ...] = (TLS_CERT, PASSWORD, TOTP, WEBAUTHN)
#: factors that exist only once the account enrolled them
ENROLLED: tuple[str, ...] = (TOTP, WEBAUTHN)

Rules = list[list[str]]


def normalize_rules(rules: Iterable[Sequence[str]]) -> Rules:
    """Rules as fresh lists in canonical method order, duplicates (of rules) removed.

    Raises ValueError naming the offending rule when a method is unknown, a rule is empty,
    or a rule lacks ``tls-cert`` (certgate always requires the certificate).
    """
    out: Rules = []
    seen: set[frozenset[str]] = set()
    for i, rule in enumerate(rules):
        items = list(rule)
        if not items:
            raise ValueError(f"rule {i} is empty")
        for m in items:
            if m not in METHODS:
                raise ValueError(f"rule {i} {items}: unknown method {m!r} (known: {', '.join(METHODS)})")
        if TLS_CERT not in items:
            raise ValueError(f"rule {i} {items} lacks {TLS_CERT}: certgate always requires the certificate")
        key = frozenset(items)
        if key in seen:
            continue
        seen.add(key)
        out.append([m for m in METHODS if m in key])
    return out


def effective_rules(rules: Sequence[Sequence[str]], totp_enrolled: bool, webauthn_enrolled: bool = False) -> Rules:
    """The rules that apply to an account, given which of ``totp``/``webauthn`` it enrolled.

    Rules naming a factor that is not enrolled are dropped (possibly all: such an account
    cannot log in until enrolled). Of the rest, the rules naming an enrolled factor if there
    are any (else all of them).
    """
    norm = normalize_rules(rules)
    have = {m for m, on in ((TOTP, totp_enrolled), (WEBAUTHN, webauthn_enrolled)) if on}
    reach = [r for r in norm if not (set(r) & set(ENROLLED)) - have]
    with_enrolled = [r for r in reach if set(r) & have]
    return with_enrolled or reach


def satisfied(rules: Sequence[Sequence[str]], proven: Iterable[str]) -> list[str] | None:
    """The first rule whose every method is in ``proven`` (a copy), else None."""
    have = set(proven)
    for rule in rules:
        if set(rule) <= have:
            return list(rule)
    return None


def reachable(rules: Sequence[Sequence[str]], proven: Iterable[str]) -> Rules:
    """Keystone's ``required_auth_methods``: the rules overlapping ``proven`` (all if none proven)."""
    have = set(proven)
    if not have:
        return [list(r) for r in rules]
    return [list(r) for r in rules if have & set(r)]


def missing(rules: Sequence[Sequence[str]], proven: Iterable[str]) -> list[str]:
    """Methods still needed by at least one reachable rule, in canonical order."""
    have = set(proven)
    need: set[str] = set()
    for r in reachable(rules, have):
        need |= set(r) - have
    return [m for m in METHODS if m in need]


def methods_in(rules: Sequence[Sequence[str]]) -> frozenset[str]:
    """Every method named by some rule."""
    out: set[str] = set()
    for r in rules:
        out |= set(r)
    return frozenset(out)


def ordered(methods: Iterable[str]) -> list[str]:
    """``methods`` in canonical order (tls-cert, password, totp, webauthn); unknown names dropped."""
    s = set(methods)
    return [m for m in METHODS if m in s]
