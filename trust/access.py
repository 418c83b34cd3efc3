"""Access rules in the style of OUTSCALE's API access rules.

A rule ``[access:NAME]`` lists ``cas``, ``cns`` and ``ip_ranges``. Criteria of one rule
are ANDed (an empty criterion is not checked); rules are ORed. With no rule at all, any
certificate the trust store accepts is allowed from anywhere. A connection *without* a
certificate is refused unless the caller passes ``allow_without_certificate=True`` and a
rule with only ``ip_ranges`` matches the client address. A certificate that was presented
but refused is never treated as "no certificate".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Sequence, Union

from .verify import Verdict

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class AccessRule:
    """One named allow rule.

    ``cas``: lower-case SHA-256 fingerprints or store file names of CA (or pinned)
    entries; matches when any certificate of the verified chain is one of them.
    ``cns``: exact accounts (the certificate's mapped account, i.e. its CN by default).
    ``ip_ranges``: client networks (an address is a /32 or /128 network).
    ``broken``: the configuration had invalid items; the rule then matches nothing
    (fail closed: dropping an invalid item must never widen a rule).
    """

    name: str
    cas: tuple[str, ...] = ()
    cns: tuple[str, ...] = ()
    ip_ranges: tuple[IPNetwork, ...] = ()
    broken: bool = False  # set by the parser when a criterion had invalid items: never matches

    @property
    def ip_only(self) -> bool:
        """True when the rule checks only the client address."""
        return bool(self.ip_ranges) and not self.cas and not self.cns


@dataclass(frozen=True)
class AccessDecision:
    """Allowed or not, the rule that allowed it, and why (for the audit log)."""

    allowed: bool
    rule: str | None
    reason: str


def parse_ip(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client address; IPv4-mapped IPv6 (``::ffff:a.b.c.d``) becomes IPv4. None if invalid."""
    try:
        addr = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _mismatch(rule: AccessRule, verdict: Verdict | None, account: str | None,
              addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str | None:
    if rule.broken:
        return "rule has configuration problems and matches nothing"
    if rule.ip_ranges:
        if addr is None or not any(addr.version == net.version and addr in net for net in rule.ip_ranges):
            return "client address not in ip_ranges"
    if rule.cas:
        if verdict is None or not verdict.ok:
            return "no trusted certificate for cas"
        names = set(verdict.chain_fingerprints) | set(verdict.store_files)
        if not names.intersection(rule.cas):
            return "certificate not issued by one of cas"
    if rule.cns:
        if verdict is None or not verdict.ok or account is None:
            return "no mapped account for cns"
        if account not in rule.cns:
            return f"account {account} not in cns"
    return None


def check(rules: Sequence[AccessRule], verdict: Verdict | None, account: str | None, client_ip: str,
          *, allow_without_certificate: bool = False) -> AccessDecision:
    """Decide whether this connection may proceed under the access rules.

    ``verdict`` is None when no certificate was presented. A refused verdict always
    refuses. With no certificate, only an ip-only rule can allow, and only when
    ``allow_without_certificate`` is True (e.g. the gate serving its login page in
    ``want`` mode). Does not verify anything itself: it consumes the trust verdict.
    """
    addr = parse_ip(client_ip)
    if verdict is not None and not verdict.ok:
        return AccessDecision(False, None, f"certificate refused: {verdict.summary}")
    if verdict is None:
        if not allow_without_certificate:
            return AccessDecision(False, None, "no client certificate")
        for rule in rules:
            if rule.ip_only and _mismatch(rule, None, None, addr) is None:
                return AccessDecision(True, rule.name, f"no certificate; client address allowed by {rule.name}")
        return AccessDecision(False, None, "no client certificate and no ip-only rule matches")
    if not rules:
        return AccessDecision(True, None, "no access rule configured: any trusted certificate is allowed")
    why = []
    for rule in rules:
        miss = _mismatch(rule, verdict, account, addr)
        if miss is None:
            return AccessDecision(True, rule.name, f"allowed by access rule {rule.name}")
        why.append(f"{rule.name}: {miss}")
    return AccessDecision(False, None, "no access rule matches (" + "; ".join(why) + ")")
