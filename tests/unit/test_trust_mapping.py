"""trust.mapping: every rule, the exact account comparison (CERT-06..10), property tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from hypothesis import given, settings, strategies as st

from trust import issue as I
from trust.mapping import (MapFileError, account_matches, account_problem, decode_utf8string, describe,
                           map_account, parse_map_file)
from trust.settings import MappingSettings

CN = MappingSettings()
CA = I.ca("Map CA")


def leaf(subject, **kw) -> x509.Certificate:
    """A client certificate under CA with the given subject (str CN, list of CNs, or Name)."""
    return I.issue(subject if isinstance(subject, x509.Name) else I.name(subject), issuer=CA, **kw).cert


def test_cn_rule_maps_the_single_cn():
    """The default rule maps CN=alice to alice."""
    assert map_account(leaf("alice"), CN).account == "alice"
    assert map_account(leaf(I.name("alice", o="Example", ou="Ops")), CN).account == "alice"


def test_cert06_two_cns_refused():
    """CERT-06: two CN attributes are refused whatever their order."""
    for cns in (["alice", "admin"], ["admin", "alice"], ["alice", "alice"]):
        r = map_account(leaf(cns), CN)
        assert r.account is None and "2 CN attributes" in (r.reason or "")


def test_cert06_multi_valued_rdn_with_cn_refused():
    """CERT-06: a multi-valued RDN containing a CN is ambiguous and refused."""
    rdn = x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
                                          x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admin")])
    name = x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ex")]), rdn])
    r = map_account(leaf(name), CN)
    assert r.account is None and "multi-valued RDN" in (r.reason or "")


def test_no_cn_refused():
    """A subject without CN maps to nobody."""
    r = map_account(leaf(I.name(None, o="Example")), CN)
    assert r.account is None and "0 CN" in (r.reason or "")


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
@pytest.mark.parametrize("cn,fragment", [
    ("alice\x00.evil", "U+0000"), ("alice\r\nX-Admin: 1", "U+000D"), ("al\tice", "U+0009"),
    ("alice\x7f", "U+007F"), ("\u0430lice", "U+0430"), ("ａｌｉｃｅ", "U+FF41"), ("ALİCE", "U+0130"),
    ("alice ", "trailing"), (" alice", "leading"), ("a" * 65, "65 characters"),
])
def test_cert07_cert08_bad_cn_characters_refused(cn, fragment):
    """CERT-07/08: NUL, CR/LF, controls, non-ASCII look-alikes, spaces, overlong CNs are refused."""
    r = map_account(leaf(cn), CN)
    assert r.account is None
    assert fragment in (r.reason or "")
    assert "\x00" not in (r.reason or "") and "\r" not in (r.reason or "")  # reasons are log-safe


def test_cert08_cert10_exact_case_sensitive_comparison():
    """CERT-08/10: only the exact account matches: no case folding, prefix, substring or Unicode tricks."""
    assert account_matches("alice", "alice", False)
    for other in ("Alice", "ALICE", "alice2", "alic", "alice ", " alice", "\u0430lice", "ａｌｉｃｅ",
                  "alice\x00", "", "xalice"):
        assert not account_matches("alice", other, False), other
    assert not account_matches(None, "alice", False)
    assert not account_matches("", "", False)


def test_strip_domain_only_on_submitted_account():
    """mapping_strip_domain strips user@domain and DOMAIN\\user from the submitted name only."""
    assert account_matches("alice", "alice@example.com", True)
    assert account_matches("alice", "EXAMPLE\\alice", True)
    assert account_matches("alice", "alice", True)
    assert not account_matches("alice", "alice@example.com", False)
    assert not account_matches("alice", "EXAMPLE\\Alice", True)
    assert not account_matches("alice", "bob@alice", True)
    assert not account_matches("alice", "EXAMPLE\\", True)


def test_cert09_cn_rule_ignores_sans_and_san_rules_use_them():
    """CERT-09: CN=alice with SAN e-mail/UPN bob: cn -> alice, san-email/san-upn -> bob's values."""
    cert = leaf("alice", emails=["bob@example.com"], upns=["bob@EXAMPLE.COM"])
    assert map_account(cert, CN).account == "alice"
    assert map_account(cert, MappingSettings(rule="san-email")).account == "bob@example.com"
    assert map_account(cert, MappingSettings(rule="san-upn")).account == "bob@EXAMPLE.COM"
    text = describe(cert, CN)
    assert "account:      alice" in text and "SANs" in text  # the conflict is pointed out


def test_san_rules_require_exactly_one_value():
    """san-email / san-upn refuse certificates with none or several entries."""
    none = leaf("alice")
    two = leaf("alice", emails=["a@x.org", "b@x.org"], upns=["a@X", "b@X"])
    for rule in ("san-email", "san-upn"):
        assert map_account(none, MappingSettings(rule=rule)).account is None
        r = map_account(two, MappingSettings(rule=rule))
        assert r.account is None and "2 subjectAltName" in (r.reason or "")
    # SAN-only certificate (empty subject) maps with the SAN rules, not with cn
    san_only = leaf(I.name(None), upns=["carol@EXAMPLE.COM"])
    assert map_account(san_only, MappingSettings(rule="san-upn")).account == "carol@EXAMPLE.COM"
    assert map_account(san_only, CN).account is None


def test_upn_must_be_utf8string():
    """A UPN otherName that is not a DER UTF8String is refused, not guessed."""
    cert = (x509.CertificateBuilder().subject_name(I.name("x")).issuer_name(CA.cert.subject)
            .public_key(CA.key.public_key()).serial_number(1)
            .not_valid_before(I.utcnow()).not_valid_after(I.utcnow().replace(year=I.utcnow().year + 1))
            .add_extension(x509.SubjectAlternativeName([x509.OtherName(I.UPN_OID, b"\x16\x03abc")]), critical=False)
            .sign(CA.key, hashes.SHA256()))
    r = map_account(cert, MappingSettings(rule="san-upn"))
    assert r.account is None and "UTF8String" in (r.reason or "")
    assert decode_utf8string(b"\x0c\x03abc") == "abc"
    assert decode_utf8string(b"\x0c\x81\x03abc") == "abc"
    assert decode_utf8string(b"\x0c\x04abc") is None and decode_utf8string(b"\x0c\x02\xff\xfe") is None


def test_regex_rule_over_rfc4514_subject():
    """regex: full match over the RFC 4514 subject (most specific first), group 1 is the account."""
    rule = MappingSettings(rule="regex", regex=r"CN=([a-z]+),OU=Ops,O=Example")
    assert map_account(leaf(I.name("alice", o="Example", ou="Ops")), rule).account == "alice"
    r = map_account(leaf(I.name("alice", o="Example", ou="Dev")), rule)
    assert r.account is None and "does not match" in (r.reason or "")
    # a second CN cannot sneak in: the whole subject must match
    assert map_account(leaf(I.name(["alice", "admin"], o="Example", ou="Ops")), rule).account is None
    # the capture is checked like a CN
    loose = MappingSettings(rule="regex", regex=r"CN=(.+)")
    assert map_account(leaf("\u0430lice"), loose).account is None
    assert map_account(leaf("x"), MappingSettings(rule="regex", regex=None)).account is None


def test_file_rule(tmp_path: Path):
    """file: exact fingerprint first, then exact subject; anything else maps to nobody."""
    a = leaf(I.name("alice", o="Example"))
    b = leaf(I.name("Bob Smith", o="Example"))
    c = leaf(I.name("carol", o="Example"))
    f = tmp_path / "accounts.map"
    fp = a.fingerprint(hashes.SHA256()).hex().upper()
    f.write_text(f"# comment\n\nsha256:{fp} admin-alice\n"
                 "subject:CN=Bob Smith,O=Example bsmith\n")
    rule = MappingSettings(rule="file", map_file=f)
    assert map_account(a, rule).account == "admin-alice"
    assert map_account(b, rule).account == "bsmith"
    r = map_account(c, rule)
    assert r.account is None and "neither" in (r.reason or "")
    # subject match is exact per attribute (case-sensitive)
    assert map_account(leaf(I.name("bob smith", o="Example")), rule).account is None
    # edits are picked up
    f.write_text("subject:CN=carol,O=Example carol\n")
    assert map_account(c, rule).account == "carol"
    missing = MappingSettings(rule="file", map_file=tmp_path / "nope.map")
    assert "cannot read" in (map_account(c, missing).reason or "")


def test_map_file_errors_name_every_line():
    """Bad map file lines are all reported with their line numbers."""
    with pytest.raises(MapFileError) as err:
        parse_map_file("sha256:abcd alice\nsubject:CN=x\nfoo bar\nsubject:=== x\nsha256:" + "a" * 64 + " b\u0430d\n",
                       "m")
    text = str(err.value)
    for n in (1, 2, 3, 4, 5):
        assert f"m:{n}:" in text
    with pytest.raises(MapFileError, match="already mapped"):
        parse_map_file(f"sha256:{'a' * 64} x\nsha256:{'A' * 64} y\n")


def test_describe_shows_every_source():
    """describe() lists subject, CNs, SANs, the rule's result and the other rules."""
    text = describe(leaf(["alice", "admin"], emails=["a@example.com"]), CN)
    assert "CN values:    alice, admin" in text
    assert "account:      none" in text and "san-email=a@example.com" in text


# --------------------------------------------------------------------------- property tests

_printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
_anything = st.text(min_size=0, max_size=70)


@settings(derandomize=True, database=None, max_examples=150, deadline=None)
@given(_anything)
def test_property_account_problem_exactly_printable_ascii(value):
    """account_problem accepts exactly 1..64 printable-ASCII characters without edge spaces."""
    ok = (0 < len(value) <= 64 and all(0x20 <= ord(c) <= 0x7E for c in value) and value == value.strip(" "))
    assert (account_problem(value) is None) == ok


@settings(derandomize=True, database=None, max_examples=150, deadline=None)
@given(_anything, _anything)
def test_property_match_is_plain_equality(mapped, submitted):
    """Without stripping, a match happens iff the strings are equal and the name is acceptable."""
    expected = bool(mapped) and mapped == submitted and account_problem(submitted) is None
    assert account_matches(mapped, submitted, False) == expected


@settings(derandomize=True, database=None, max_examples=100, deadline=None)
@given(_printable, _printable)
def test_property_strip_domain(user, domain):
    """user@domain and DOMAIN\\user match user when the user part has no separators."""
    if "@" in user or "\\" in user or "\\" in domain or "@" in domain:
        return
    assert account_matches(user, f"{user}@{domain}", True)
    assert account_matches(user, f"{domain}\\{user}", True)
    assert not account_matches(user, f"{user}@{domain}", False)


_name_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x24F), min_size=1, max_size=20)


@settings(derandomize=True, database=None, max_examples=60, deadline=None)
@given(st.lists(_name_value, min_size=0, max_size=3), _name_value)
def test_property_cn_rule_on_generated_names(cns, org):
    """For any subject: cn maps iff there is exactly one acceptable CN, and then maps to it."""
    cert = leaf(I.name(cns, o=org))
    r = map_account(cert, CN)
    if len(cns) == 1 and account_problem(cns[0]) is None:
        assert r.account == cns[0]
    else:
        assert r.account is None and r.reason
    # the RFC 4514 form round-trips to the same Name (what map files and regexes rely on)
    assert x509.Name.from_rfc4514_string(cert.subject.rfc4514_string()) == cert.subject


@settings(derandomize=True, database=None, max_examples=60, deadline=None)
@given(_name_value)
def test_property_map_file_subject_round_trip(value):
    """A subject written with rfc4514_string() in a map file maps back to its account."""
    cert = leaf(I.name("svc", o=value))
    table = parse_map_file(f"subject:{cert.subject.rfc4514_string()} svc-account\n")
    assert table.by_subject.get(cert.subject) == "svc-account"
