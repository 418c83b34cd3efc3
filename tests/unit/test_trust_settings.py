"""trust.settings: [trust] and [access:NAME] parsing; every problem names section, key and reason."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from trust import issue as I
from trust.problems import Problem
from trust.settings import MappingSettings, TrustSettings, parse_access_sections, parse_trust_section
from trust.store import load_store
from trust.verify import VerifyPolicy


def test_problem_str():
    """Problems render as '[section] key: reason' or '[section]: reason'."""
    assert str(Problem("trust", "crl", "bad")) == "[trust] crl: bad"
    assert str(Problem("access:x", None, "empty")) == "[access:x]: empty"


def test_defaults_and_relative_store(tmp_path: Path):
    """Only `store` is required; it is relative to the config folder; defaults are documented."""
    s, problems = parse_trust_section({"store": "trust"}, tmp_path)
    assert problems == []
    assert s == TrustSettings(store=tmp_path / "trust")
    assert (s.reload_interval, s.crl, s.max_depth, s.min_rsa_bits, s.unsafe_allow_missing_eku,
            s.expiry_warning_days) == (2.0, "hard", 4, 2048, False, 14)
    assert s.mapping == MappingSettings()
    assert s.policy == VerifyPolicy()
    assert parse_trust_section({"store": "/etc/certgate/trust"}, tmp_path)[0].store == Path("/etc/certgate/trust")


def test_all_keys(tmp_path: Path):
    """Every key is read and reaches the settings and the policy."""
    values = {"store": "s", "reload_interval": "0", "crl": "soft", "max_depth": "2", "min_rsa_bits": "3072",
              "unsafe_allow_missing_eku": "Yes", "expiry_warning_days": "14", "mapping": "regex",
              "mapping_strip_domain": "on", "mapping_regex": r"CN=([^,]+),O=Example"}
    s, problems = parse_trust_section(values, tmp_path)
    assert problems == []
    assert s.policy == VerifyPolicy(max_depth=2, min_rsa_bits=3072, crl="soft", unsafe_allow_missing_eku=True)
    assert s.reload_interval == 0 and s.expiry_warning_days == 14
    assert s.mapping == MappingSettings(rule="regex", strip_domain=True, regex=r"CN=([^,]+),O=Example")


def test_problems_name_key_and_reason_and_defaults_stay_usable(tmp_path: Path):
    """Bad values give precise problems; the returned settings fall back to defaults."""
    values = {"crl": "sometimes", "max_depth": "0", "min_rsa_bits": "1024", "reload_interval": "soon",
              "unsafe_allow_missing_eku": "maybe", "expiry_warning_days": "-1", "mapping": "kerberos",
              "colour": "blue"}
    s, problems = parse_trust_section(values, tmp_path)
    text = [str(p) for p in problems]
    assert "[trust] crl: 'sometimes' is not one of hard, soft, off" in text
    assert "[trust] max_depth: 0 is outside the range 1..16" in text
    assert "[trust] min_rsa_bits: 1024 is outside the range 2048..16384" in text
    assert "[trust] reload_interval: 'soon' is not a number" in text
    assert any(t.startswith("[trust] unsafe_allow_missing_eku: 'maybe' is not a boolean") for t in text)
    assert "[trust] expiry_warning_days: -1 is outside the range 0..3650" in text
    assert any(t.startswith("[trust] mapping: 'kerberos' is not one of cn, san-email") for t in text)
    assert any(t.startswith("[trust] colour: unknown key") for t in text)
    assert "[trust] store: required: the trust store folder" in text
    assert s.crl == "hard" and s.max_depth == 4 and s.unsafe_allow_missing_eku is False
    assert s.mapping.rule == "cn" and s.policy == VerifyPolicy()


def test_mapping_dependencies(tmp_path: Path):
    """regex needs one capture group; file needs a valid map file; strip_domain conflicts with SAN rules."""
    def problems(**values: str) -> list[str]:
        return [str(p) for p in parse_trust_section({"store": "s", **values}, tmp_path)[1]]
    assert problems(mapping="regex") == ["[trust] mapping_regex: required when mapping = regex"]
    assert "capture groups; exactly one" in problems(mapping="regex", mapping_regex="CN=(a)(b)")[0]
    assert "not a valid regular expression" in problems(mapping="regex", mapping_regex="CN=(")[0]
    assert problems(mapping="file") == ["[trust] mapping_file: required when mapping = file"]
    assert "cannot read" in problems(mapping="file", mapping_file="missing.map")[0]
    (tmp_path / "bad.map").write_text("sha256:zz alice\n")
    assert ":1:" in problems(mapping="file", mapping_file="bad.map")[0]
    (tmp_path / "ok.map").write_text("subject:CN=a alice\n")
    s, p = parse_trust_section({"store": "s", "mapping": "file", "mapping_file": "ok.map"}, tmp_path)
    assert p == [] and s.mapping.map_file == tmp_path / "ok.map"
    assert "mapping_strip_domain: cannot be used with mapping = san-upn" in problems(
        mapping="san-upn", mapping_strip_domain="yes")[0]


def test_booleans():
    """Booleans accept yes/no/true/false/on/off/1/0 in any case."""
    for raw, expected in (("yes", True), ("TRUE", True), ("On", True), ("1", True),
                          ("no", False), ("False", False), ("off", False), ("0", False)):
        s, p = parse_trust_section({"store": "s", "unsafe_allow_missing_eku": raw}, Path("/"))
        assert p == [] and s.unsafe_allow_missing_eku is expected


def test_access_sections(tmp_path: Path):
    """cas (fingerprints / file names), cns, ip_ranges (v4, v6, addresses) are parsed."""
    fp = "AB:" * 31 + "AB"
    rules, problems = parse_access_sections({
        "admins": {"cas": f"{fp}, corp-root.pem", "cns": "alice, bob", "ip_ranges": "10.0.0.0/8, 2001:db8::/32"},
        "office": {"ip_ranges": "192.0.2.7"},
    })
    assert problems == []
    admins, office = rules
    assert admins.name == "admins" and admins.cas == ("ab" * 32, "corp-root.pem")
    assert admins.cns == ("alice", "bob") and not admins.broken
    assert admins.ip_ranges == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    assert office.ip_ranges == (ipaddress.ip_network("192.0.2.7/32"),) and office.ip_only


def test_access_problems_make_the_rule_match_nothing(tmp_path: Path):
    """Invalid items are problems, and the rule is marked broken (it never widens to allow-all)."""
    rules, problems = parse_access_sections({
        "typo": {"cns": "alice", "ip_range": "10.0.0.0/8"},
        "bad": {"ip_ranges": "10.0.0.1/8, nonsense", "cns": "al\u0456ce", "cas": "/etc/ca.pem"},
        "empty": {},
        "sp ace": {"cns": "x"},
    })
    text = [str(p) for p in problems]
    assert any(t.startswith("[access:typo] ip_range: unknown key") for t in text)
    assert any(t.startswith("[access:bad] ip_ranges: '10.0.0.1/8' is not an IP network") for t in text)
    assert any(t.startswith("[access:bad] ip_ranges: 'nonsense'") for t in text)
    assert any(t.startswith("[access:bad] cns: 'al") and "U+0456" in t for t in text)
    assert any(t.startswith("[access:bad] cas: '/etc/ca.pem' is neither") for t in text)
    assert "[access:empty]: a rule needs at least one of cas, cns, ip_ranges" in text
    assert any(t.startswith("[access:sp ace]: rule names") for t in text)
    assert all(r.broken for r in rules)


def test_access_cas_checked_against_a_generation(tmp_path: Path):
    """With generation_hint, cas entries must name a CA or pinned entry of the store."""
    root = I.ca("Hint Root")
    (tmp_path / "root.pem").write_bytes(I.pem(root.cert))
    g = load_store(tmp_path, now=I.utcnow())
    rules, problems = parse_access_sections({"ok": {"cas": f"root.pem, {root.fingerprint}"}}, g)
    assert problems == [] and not rules[0].broken
    rules, problems = parse_access_sections({"ko": {"cas": "other.pem"}}, g)
    assert [str(p) for p in problems] == ["[access:ko] cas: 'other.pem' is not a CA or pinned certificate of "
                                          "the trust store"]
    assert rules[0].broken
