"""trust.access: OUTSCALE-style rules (ANDed criteria, ORed rules, fail closed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trust import issue as I
from trust.access import AccessRule, check, parse_ip
from trust.settings import parse_access_sections
from trust.store import load_store
from trust.verify import VerifyPolicy, verify

NOW = I.utcnow()
ROOT_A = I.ca("Root A")
ROOT_B = I.ca("Root B")
INTER_A = I.ca("Inter A", issuer=ROOT_A)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    folder: Path = tmp_path_factory.mktemp("access")
    (folder / "a.pem").write_bytes(I.pem(ROOT_A.cert))
    (folder / "b.pem").write_bytes(I.pem(ROOT_B.cert))
    return load_store(folder, now=NOW)


def verdict(issuer, cn, gen):
    leaf = I.client(issuer, cn)
    v = verify(leaf.cert, leaf.chain, gen, VerifyPolicy(), now=NOW)
    assert v.ok, v.summary
    return v


def rules(**sections):
    parsed, problems = parse_access_sections(sections)
    assert problems == []
    return parsed


def test_no_rules_allows_any_trusted_certificate_from_anywhere(gen):
    """No access rule: any trusted certificate, any address."""
    d = check([], verdict(ROOT_B, "x", gen), "x", "203.0.113.9")
    assert d.allowed and d.rule is None


def test_refused_or_missing_certificate_is_refused(gen):
    """A refused verdict always refuses; no certificate refuses unless the caller asks."""
    bad = verify(I.client(I.ca("Rogue"), "x").cert, [], gen, VerifyPolicy(), now=NOW)
    d = check([], bad, None, "10.0.0.1")
    assert not d.allowed and "unknown-ca" in d.reason
    assert not check([], None, None, "10.0.0.1").allowed
    office = rules(office={"ip_ranges": "10.0.0.0/8"})
    # even with allow_without_certificate, a presented-but-invalid certificate never passes
    assert not check(office, bad, None, "10.0.0.1", allow_without_certificate=True).allowed


def test_ip_only_rule_without_certificate_only_on_request(gen):
    """An ip-only rule admits a certificate-less connection only with allow_without_certificate."""
    rs = rules(office={"ip_ranges": "10.0.0.0/8, 2001:db8::/32"}, admins={"cns": "alice"})
    assert not check(rs, None, None, "10.1.2.3").allowed
    d = check(rs, None, None, "10.1.2.3", allow_without_certificate=True)
    assert d.allowed and d.rule == "office"
    assert check(rs, None, None, "2001:db8::5", allow_without_certificate=True).allowed
    assert not check(rs, None, None, "192.0.2.1", allow_without_certificate=True).allowed
    # cns/cas rules never admit a connection without a certificate
    only_cns = rules(admins={"cns": "alice", "ip_ranges": "10.0.0.0/8"})
    assert not check(only_cns, None, None, "10.1.2.3", allow_without_certificate=True).allowed


def test_criteria_are_anded_and_rules_ored(gen):
    """Within a rule every criterion must hold; any rule suffices."""
    alice_a = verdict(INTER_A, "alice", gen)
    bob_a = verdict(INTER_A, "bob", gen)
    alice_b = verdict(ROOT_B, "alice", gen)
    rs = rules(admins={"cas": "a.pem", "cns": "alice", "ip_ranges": "10.0.0.0/8"},
               ops={"cas": ROOT_B.fingerprint, "ip_ranges": "192.0.2.0/24"})
    d = check(rs, alice_a, "alice", "10.9.9.9")
    assert d.allowed and d.rule == "admins"
    assert not check(rs, alice_a, "alice", "192.0.2.1").allowed   # right CA and CN, wrong network
    assert not check(rs, bob_a, "bob", "10.9.9.9").allowed         # wrong CN
    assert not check(rs, alice_b, "alice", "10.9.9.9").allowed     # wrong CA for admins, wrong net for ops
    d = check(rs, alice_b, "alice", "192.0.2.200")
    assert d.allowed and d.rule == "ops"
    refused = check(rs, bob_a, "bob", "10.9.9.9")
    assert "admins: account bob not in cns" in refused.reason


def test_cas_match_any_chain_certificate(gen):
    """cas may name an intermediate (by fingerprint) as well as the anchor."""
    v = verdict(INTER_A, "carol", gen)
    rs = [AccessRule("inter", cas=(INTER_A.fingerprint,))]
    assert check(rs, v, "carol", "10.0.0.1").allowed
    assert not check(rs, verdict(ROOT_A, "dan", gen), "dan", "10.0.0.1").allowed


def test_cns_need_a_mapped_account(gen):
    """cns compares the mapped account; a certificate that maps to nobody does not match."""
    rs = rules(admins={"cns": "alice"})
    assert not check(rs, verdict(ROOT_A, "alice", gen), None, "10.0.0.1").allowed
    assert not check(rs, verdict(ROOT_A, "Alice", gen), "Alice", "10.0.0.1").allowed


def test_addresses(gen):
    """IPv4-mapped IPv6 counts as IPv4; garbage addresses never match a range."""
    assert str(parse_ip("::ffff:10.1.2.3")) == "10.1.2.3"
    assert parse_ip("fe80::1%eth0") is not None and parse_ip("not-an-ip") is None
    rs = rules(net={"ip_ranges": "10.0.0.0/8"})
    v = verdict(ROOT_A, "x", gen)
    assert check(rs, v, "x", "::ffff:10.1.2.3").allowed
    assert not check(rs, v, "x", "not-an-ip").allowed


def test_broken_rule_matches_nothing(gen):
    """A rule with configuration problems never matches (fail closed)."""
    parsed, problems = parse_access_sections({"typo": {"cns": "alice", "ip_rangs": "10.0.0.0/8"}})
    assert problems and parsed[0].broken
    d = check(parsed, verdict(ROOT_A, "alice", gen), "alice", "10.0.0.1")
    assert not d.allowed and "configuration problems" in d.reason
