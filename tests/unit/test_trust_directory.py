"""trust.directory: filters built from certificate fields, and what an answer means."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from trust import issue as I
from trust.directory import (DirectoryEntry, DirectoryRules, MAX_ENTRIES, ad_dn, altsecid_values, build_query,
                             escape_filter_value, filter_problem, interpret, reversed_serial_hex)
from trust.mapping import MappingResult

CA = I.ca("Corp CA")


def _query(cert: I.Issued, **rules: object):  # type: ignore[no-untyped-def]
    q = build_query(cert.cert, I.der(cert.cert), DirectoryRules(**rules))  # type: ignore[arg-type]
    assert not isinstance(q, MappingResult), q
    return q


def test_rfc4515_escaping_of_text_and_bytes() -> None:
    assert escape_filter_value("a*b(c)d\\e\x00") == "a\\2ab\\28c\\29d\\5ce\\00"
    assert escape_filter_value("plain@example.test") == "plain@example.test"
    assert escape_filter_value(b"\x30\x82*") == "\\30\\82\\2a"


def test_a_hostile_upn_cannot_change_the_filter() -> None:
    """A UPN SAN such as ``*)(uid=*`` stays one escaped assertion value."""
    evil = I.client(CA, "x", upns=["*)(uid=*"])
    q = _query(evil, styles=("upn",))
    assert q.filter == "(userPrincipalName=\\2a\\29\\28uid=\\2a)"
    assert filter_problem(q.filter) is None


def test_ad_dn_is_x500_order_with_microsoft_names_and_quoting() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Ops, Paris"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "IDF"),
                      x509.NameAttribute(NameOID.COMMON_NAME, 'Jo "J" Doe')])
    assert ad_dn(name) == 'CN="Jo ""J"" Doe",S=IDF,OU="Ops, Paris",DC=example'


def test_reversed_serial_and_altsecid_forms() -> None:
    cert = I.issue("alice", issuer=CA, serial=0x0102A3)
    assert reversed_serial_hex(cert.cert) == ["A30201"]
    high = I.issue("bob", issuer=CA, serial=0x80FF)
    assert reversed_serial_hex(high.cert) == ["FF80", "FF8000"]
    values = altsecid_values(cert.cert, ("issuer-subject", "issuer-serial", "ski", "unsafe-subject"))
    issuer = ad_dn(CA.cert.subject)
    ski = cert.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex().upper()
    assert values == [f"X509:<I>{issuer}<S>CN=alice", f"X509:<I>{issuer}<SR>A30201", f"X509:<SKI>{ski}",
                      "X509:<S>CN=alice"]
    assert altsecid_values(cert.cert, ("issuer-subject",)) == [values[0]]  # weak forms only when asked


def test_styles_are_ored_with_the_extra_filter_anded() -> None:
    c = I.client(CA, "Carol", upns=["carol@corp.test"], emails=["carol@mail.test"])
    q = _query(c, styles=("upn", "email"), filter="(objectClass=person)")
    assert q.filter == "(&(objectClass=person)(|(userPrincipalName=carol@corp.test)(mail=carol@mail.test)))"
    assert q.styles == ("upn", "email") and set(q.attributes) == {"uid", "userPrincipalName", "mail"}
    cert_q = _query(c, styles=("certificate",), certificate_assertion="serial-issuer")
    assert cert_q.filter.startswith("(userCertificate;binary={ serialNumber ")
    der_q = _query(c, styles=("certificate",))
    assert der_q.filter == f"(userCertificate;binary={escape_filter_value(I.der(c.cert))})"


def test_no_applicable_style_or_two_upns_is_refused_without_asking() -> None:
    plain = I.client(CA, "Plain")
    r = build_query(plain.cert, I.der(plain.cert), DirectoryRules(styles=("upn", "email")))
    assert isinstance(r, MappingResult) and r.account is None and "no configured directory style" in str(r.reason)
    two = I.client(CA, "Two", upns=["a@x.test", "b@x.test"])
    r = build_query(two.cert, I.der(two.cert), DirectoryRules(styles=("upn",)))
    assert isinstance(r, MappingResult) and "2 UPN SAN entries" in str(r.reason)


def _entry(dn: str, **attrs: list[bytes]) -> DirectoryEntry:
    return DirectoryEntry(dn, {k.lower(): v for k, v in attrs.items()})


def test_interpretation_rechecks_every_entry_against_the_certificate() -> None:
    c = I.client(CA, "Alice")
    other = I.issue("Alice", issuer=CA, serial=c.cert.serial_number)  # same serial+issuer, other bytes
    q = _query(c, styles=("certificate",), certificate_assertion="serial-issuer")
    good = _entry("uid=alice,dc=x", **{"userCertificate;binary": [I.der(c.cert)], "uid": [b"alice"]})
    impostor = _entry("uid=mallory,dc=x", **{"userCertificate;binary": [I.der(other.cert)], "uid": [b"mallory"]})
    assert interpret(q, [good]) == MappingResult("alice", None)
    assert interpret(q, [impostor, good]) == MappingResult("alice", None)  # the impostor does not count
    r = interpret(q, [impostor])
    assert r.account is None and "1 returned, none holding the certificate's value" in str(r.reason)


def test_ambiguous_missing_and_bad_accounts_are_refused() -> None:
    c = I.client(CA, "Dave", upns=["dave@x.test"])
    q = _query(c, styles=("upn",), account_attribute="sAMAccountName")
    e1 = _entry("cn=d1", userPrincipalName=[b"DAVE@x.test"], sAMAccountName=[b"dave1"])
    e2 = _entry("cn=d2", userPrincipalName=[b"dave@x.test"], sAMAccountName=[b"dave2"])
    assert interpret(q, [e1]) == MappingResult("dave1", None)  # UPNs compare without case, as AD does
    r = interpret(q, [e1, e2])
    assert r.account is None and "2 directory entries match" in str(r.reason) and "cn=d1" in str(r.reason)
    assert "no directory entry matches" in str(interpret(q, []).reason)
    assert "more than" in str(interpret(q, [e1], truncated=True).reason) and MAX_ENTRIES >= 2
    two_values = _entry("cn=d1", userPrincipalName=[b"dave@x.test"], sAMAccountName=[b"a", b"b"])
    assert "has 2 values" in str(interpret(q, [two_values]).reason)
    nonascii = _entry("cn=d1", userPrincipalName=[b"dave@x.test"], sAMAccountName=["d\u0430ve".encode()])
    assert "non-ASCII" in str(interpret(q, [nonascii]).reason)
    missing = _entry("cn=d1", userPrincipalName=[b"dave@x.test"])
    assert "has 0 values" in str(interpret(q, [missing]).reason)


def test_altsecid_values_compare_without_case_and_repeated_spaces() -> None:
    """As caseIgnoreMatch does: case and runs of spaces are insignificant."""
    c = I.client(CA, "Bob")
    q = _query(c, styles=("altsecid",), altsecid_forms=("issuer-subject",))
    assert "Corp CA" in q.altsecids[0]
    stored = q.altsecids[0].lower().replace("corp ca", "corp   ca")
    e = _entry("cn=bob", altSecurityIdentities=[stored.encode()], uid=[b"bob"])
    assert interpret(q, [e]) == MappingResult("bob", None)
    wrong = _entry("cn=bob", altSecurityIdentities=[b"X509:<I>CN=Other<S>CN=Bob"], uid=[b"bob"])
    assert interpret(q, [wrong]).account is None


def test_filter_problem() -> None:
    assert filter_problem("(objectClass=person)") is None
    assert filter_problem("(&(a=b)(c=d))") is None
    assert filter_problem("objectClass=person") is not None
    assert filter_problem("(a=b))(") is not None
    assert filter_problem("(a=b)(c=d)") is not None
    assert filter_problem("(a=\\29b)") is None
