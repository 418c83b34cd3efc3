"""``mapping = ldap``, the pure half: the search filter built from a certificate and the
interpretation of what the directory answered. The I/O is in :mod:`proxy.listener.directory`.

Styles (``[ldap] styles``), ORed into one search so an entry found by two styles, or two
entries found by any, is seen at once:

* ``certificate``: the exact certificate in ``userCertificate;binary`` (the DER value, as
  Active Directory, 389-ds/FreeIPA and SSSD's ``{cert!bin}`` use; OpenLDAP's
  ``certificateExactMatch`` needs ``certificate_assertion = serial-issuer``);
* ``altsecid``: ``altSecurityIdentities`` X509 mappings in Active Directory's forms
  (``X509:<I>issuer<S>subject``, ``X509:<I>issuer<SR>serial``, ``X509:<SKI>ski`` and the
  weak ``unsafe-subject`` / ``unsafe-rfc822`` when configured);
* ``upn``: the certificate's single UPN SAN looked up in ``userPrincipalName``;
* ``email``: the certificate's single e-mail SAN looked up in ``mail``.

Whatever the directory's matching rules are, an entry counts only if one of its values
equals what the certificate says (the certificate bytes exactly; AD strings compared without
case, as AD does). Exactly one such entry maps; its ``account_attribute`` must hold exactly
one acceptable account. This module does no I/O and does not check trust.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from . import certinfo
from .mapping import MappingResult, account_problem, san_values
from .problems import Problem

STYLES = ("certificate", "altsecid", "upn", "email")
ALTSECID_FORMS = ("issuer-subject", "issuer-serial", "ski", "unsafe-subject", "unsafe-rfc822")
DEFAULT_STYLES = ("certificate", "altsecid", "upn")
DEFAULT_ALTSECID_FORMS = ("issuer-subject", "issuer-serial", "ski")
CERT_ASSERTIONS = ("der", "serial-issuer")
#: More entries than this in one answer is refused as ambiguous without looking further.
MAX_ENTRIES = 10

# Microsoft's X.500 short names (CertNameToStr, as certutil and AD tools write them).
_AD_NAMES = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.ORGANIZATION_NAME: "O",
             NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "S", NameOID.COUNTRY_NAME: "C",
             NameOID.DOMAIN_COMPONENT: "DC", NameOID.EMAIL_ADDRESS: "E", NameOID.STREET_ADDRESS: "STREET",
             NameOID.SERIAL_NUMBER: "SERIALNUMBER", NameOID.GIVEN_NAME: "G", NameOID.SURNAME: "SN",
             NameOID.TITLE: "T"}
_AD_QUOTE = set(',+="\r\n<>#;')


@dataclass(frozen=True)
class DirectoryRules:
    """The pure part of ``[ldap]``: which styles, which attribute is the account."""

    styles: tuple[str, ...] = DEFAULT_STYLES
    altsecid_forms: tuple[str, ...] = DEFAULT_ALTSECID_FORMS
    account_attribute: str = "uid"
    filter: str = ""
    certificate_assertion: str = "der"


@dataclass(frozen=True)
class DirectoryQuery:
    """One search for one certificate: the filter and what an entry must hold to count."""

    filter: str
    attributes: tuple[str, ...]
    styles: tuple[str, ...]
    certificate_der: bytes = b""
    altsecids: tuple[str, ...] = ()
    upn: str | None = None
    email: str | None = None
    account_attribute: str = "uid"


@dataclass(frozen=True)
class DirectoryEntry:
    """One entry of the answer; attribute names lower-case, values raw bytes."""

    dn: str
    attributes: Mapping[str, Sequence[bytes]] = field(default_factory=dict)

    def values(self, name: str) -> Sequence[bytes]:
        """Values of ``name`` and of its options (``name;binary``), case-insensitive name."""
        name = name.lower()
        out: list[bytes] = []
        for k, v in self.attributes.items():
            if k == name or k.split(";", 1)[0] == name:
                out.extend(v)
        return out


def escape_filter_value(value: str | bytes) -> str:
    """RFC 4515 assertion-value escaping: ``* ( ) \\`` and NUL as ``\\XX``; bytes: all escaped.

    A ``str`` keeps its other characters (UTF-8 is sent as is); ``bytes`` (binary values
    such as a certificate) are escaped byte by byte.
    """
    if isinstance(value, bytes):
        return "".join(f"\\{b:02x}" for b in value)
    out = []
    for ch in value:
        if ch in "*()\\\x00":
            out.append("".join(f"\\{b:02x}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def filter_problem(text: str) -> str | None:
    """Why ``text`` is not a parenthesised LDAP filter (balanced, non-empty), or None."""
    t = text.strip()
    if not t.startswith("(") or not t.endswith(")"):
        return "an LDAP filter starts with '(' and ends with ')'"
    depth, escaped = 0, False
    for i, ch in enumerate(t):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0 or (depth == 0 and i != len(t) - 1):
                return "the parentheses are not balanced"
    return None if depth == 0 else "the parentheses are not balanced"


def ad_dn(name: x509.Name) -> str:
    """``name`` as Active Directory writes it in altSecurityIdentities: X.500 order (most
    significant RDN first), Microsoft short names, ``,`` between RDNs, values quoted with
    ``"`` when they hold a special character (inner quotes doubled)."""
    rdns = []
    for rdn in reversed(list(name.rdns)):
        parts = []
        for attr in rdn:
            key = _AD_NAMES.get(attr.oid, f"OID.{attr.oid.dotted_string}")
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            if value != value.strip(" ") or any(c in _AD_QUOTE for c in value):
                value = '"' + value.replace('"', '""') + '"'
            parts.append(f"{key}={value}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def reversed_serial_hex(cert: x509.Certificate) -> list[str]:
    """AD's ``<SR>`` form: the serial's bytes in reversed order, hex (with and without a
    leading 00 byte when the top bit is set, as tools differ)."""
    n = cert.serial_number
    raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    out = [raw[::-1].hex().upper()]
    if raw[0] & 0x80:
        out.append((b"\x00" + raw)[::-1].hex().upper())
    return out


def altsecid_values(cert: x509.Certificate, forms: Sequence[str]) -> list[str]:
    """The ``altSecurityIdentities`` values that name ``cert`` in the configured forms."""
    issuer, subject = ad_dn(cert.issuer), ad_dn(cert.subject)
    out: list[str] = []
    if "issuer-subject" in forms and subject:
        out.append(f"X509:<I>{issuer}<S>{subject}")
    if "issuer-serial" in forms:
        out += [f"X509:<I>{issuer}<SR>{sr}" for sr in reversed_serial_hex(cert)]
    if "ski" in forms:
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            out.append(f"X509:<SKI>{ski.hex().upper()}")
        except x509.ExtensionNotFound:
            pass
    if "unsafe-subject" in forms and subject:
        out.append(f"X509:<S>{subject}")
    if "unsafe-rfc822" in forms:
        emails, _, _ = san_values(cert)
        if len(emails) == 1:
            out.append(f"X509:<RFC822>{emails[0]}")
    return out


def _gser_string(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def build_query(cert: x509.Certificate, der: bytes, rules: DirectoryRules) -> DirectoryQuery | MappingResult:
    """The search for ``cert`` (``der`` its encoding), or a refusal when no style applies.

    Every value taken from the certificate is RFC 4515-escaped. ``upn``/``email`` need
    exactly one such SAN entry (several are refused as ambiguous, none skips the style).
    """
    try:
        emails, upns, san_error = san_values(cert)
    except ValueError as exc:
        return MappingResult(None, f"the certificate cannot be read: {exc}")
    terms: list[str] = []
    used: list[str] = []
    attrs = {rules.account_attribute}
    altsecids: list[str] = []
    upn = email = None
    for style in rules.styles:
        before = len(terms)
        if style == "certificate":
            if rules.certificate_assertion == "serial-issuer":
                value = (f"{{ serialNumber {cert.serial_number}, issuer rdnSequence:"
                         f"{_gser_string(cert.issuer.rfc4514_string())} }}")
                terms.append(f"(userCertificate;binary={escape_filter_value(value)})")
            else:
                terms.append(f"(userCertificate;binary={escape_filter_value(der)})")
            attrs.add("userCertificate;binary")
        elif style == "altsecid":
            altsecids = altsecid_values(cert, rules.altsecid_forms)
            terms += [f"(altSecurityIdentities={escape_filter_value(v)})" for v in altsecids]
            if altsecids:
                attrs.add("altSecurityIdentities")
        elif style == "upn":
            if san_error:
                return MappingResult(None, san_error)
            if len(upns) > 1:
                return MappingResult(None, f"the certificate has {len(upns)} UPN SAN entries; at most one is allowed")
            if upns:
                upn = upns[0]
                terms.append(f"(userPrincipalName={escape_filter_value(upn)})")
                attrs.add("userPrincipalName")
        elif style == "email":
            if len(emails) > 1:
                return MappingResult(None, f"the certificate has {len(emails)} e-mail SAN entries; "
                                           "at most one is allowed")
            if emails:
                email = emails[0]
                terms.append(f"(mail={escape_filter_value(email)})")
                attrs.add("mail")
        if len(terms) > before:
            used.append(style)
    if not terms:
        return MappingResult(None, f"no configured directory style ({', '.join(rules.styles)}) applies to this "
                                   "certificate (no UPN/e-mail SAN for upn/email)")
    match = terms[0] if len(terms) == 1 else "(|" + "".join(terms) + ")"
    extra = rules.filter.strip()
    flt = f"(&{extra}{match})" if extra else match
    return DirectoryQuery(filter=flt, attributes=tuple(sorted(attrs)), styles=tuple(used), certificate_der=der,
                          altsecids=tuple(altsecids), upn=upn, email=email,
                          account_attribute=rules.account_attribute)


def _fold(value: str) -> str:
    return " ".join(value.split()).casefold()


def _texts(values: Sequence[bytes]) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(v.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return out


def matched_styles(query: DirectoryQuery, entry: DirectoryEntry) -> list[str]:
    """Which styles ``entry`` really matches: a value equal to what the certificate says."""
    out = []
    if "certificate" in query.styles and query.certificate_der in entry.values("userCertificate"):
        out.append("certificate")
    if "altsecid" in query.styles and query.altsecids:
        wanted = {_fold(v) for v in query.altsecids}
        if any(_fold(v) in wanted for v in _texts(entry.values("altSecurityIdentities"))):
            out.append("altsecid")
    if "upn" in query.styles and query.upn is not None:
        if any(_fold(v) == _fold(query.upn) for v in _texts(entry.values("userPrincipalName"))):
            out.append("upn")
    if "email" in query.styles and query.email is not None:
        if any(_fold(v) == _fold(query.email) for v in _texts(entry.values("mail"))):
            out.append("email")
    return out


def interpret(query: DirectoryQuery, entries: Sequence[DirectoryEntry], truncated: bool = False) -> MappingResult:
    """The account the directory's answer gives, or why it gives none.

    Refused: no entry really matching; two or more (ambiguous, named by DN); more than
    :data:`MAX_ENTRIES` (``truncated``); an account attribute that is missing, multi-valued,
    not UTF-8 or not an acceptable account name.
    """
    if truncated:
        return MappingResult(None, f"the directory found more than {MAX_ENTRIES} entries; refused as ambiguous")
    real = [e for e in entries if matched_styles(query, e)]
    if not real:
        extra = f" ({len(entries)} returned, none holding the certificate's value)" if entries else ""
        return MappingResult(None, f"no directory entry matches the certificate{extra}")
    dns = sorted({e.dn for e in real})
    if len(dns) > 1:
        shown = "; ".join(certinfo.printable_repr(d) for d in dns)
        return MappingResult(None, f"{len(dns)} directory entries match the certificate ({shown}); "
                                   "refused as ambiguous")
    entry = real[0]
    values = entry.values(query.account_attribute)
    where = f"{query.account_attribute} of {certinfo.printable_repr(entry.dn)}"
    if len(values) != 1:
        return MappingResult(None, f"{where} has {len(values)} values; exactly one is required")
    try:
        account = values[0].decode("utf-8")
    except UnicodeDecodeError:
        return MappingResult(None, f"{where} is not UTF-8")
    problem = account_problem(account, where)
    if problem:
        return MappingResult(None, f"{problem}: {certinfo.printable_repr(account)}")
    return MappingResult(account, None)


def describe_answer(query: DirectoryQuery, entries: Sequence[DirectoryEntry], truncated: bool,
                    result: MappingResult) -> list[str]:
    """Lines for ``certgate trust map``: the filter, every entry returned and the outcome."""
    lines = [f"directory filter: {query.filter}",
             f"styles tried:     {', '.join(query.styles)}"]
    for v in query.altsecids:
        lines.append(f"altsecid value:   {v}")
    if not entries:
        lines.append("directory answer: no entry")
    for e in entries:
        styles = matched_styles(query, e)
        acct = ", ".join(certinfo.printable_repr(v) for v in _texts(e.values(query.account_attribute))) or "-"
        lines.append(f"entry:            {certinfo.printable_repr(e.dn)} ({query.account_attribute}: {acct}; "
                     f"matches: {', '.join(styles) or 'nothing the certificate says'})")
    if truncated:
        lines.append(f"directory answer: truncated at {MAX_ENTRIES} entries")
    lines.append(f"account:          {result.account if result.account is not None else f'none ({result.reason})'}")
    return lines


def ldap_problems(v: Mapping[str, Any]) -> list[Problem]:
    """Problems of a parsed ``[ldap]`` section (checked when ``[trust] mapping = ldap``):
    URL and TLS, base DN, bind password file, styles, forms, attribute name, filter syntax.
    Does not contact the directory."""
    problems: list[Problem] = []

    def bad(key: str, why: str) -> None:
        problems.append(Problem("ldap", key, why))

    url = str(v["url"])
    parts = urlsplit(url)
    if not url:
        bad("url", "is required when [trust] mapping = ldap")
    elif parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        bad("url", f"{url!r} must be ldaps://HOST[:PORT] or ldap://HOST[:PORT]")
    else:
        try:
            parts.port
        except ValueError:
            bad("url", f"{url!r} has an invalid port")
        if parts.scheme == "ldap" and not v["starttls"] and not v["unsafe_plaintext"]:
            bad("starttls", "ldap:// needs starttls = yes (or ldaps://); refusing to send the bind password and "
                            "accounts in clear")
        if parts.scheme == "ldaps" and v["starttls"]:
            bad("starttls", "cannot be used with ldaps:// (already TLS)")
    if not str(v["base_dn"]).strip():
        bad("base_dn", "is required when [trust] mapping = ldap")
    if v["bind_dn"] and v["bind_password_file"] is None:
        bad("bind_password_file", "is required with bind_dn")
    for key in ("bind_password_file", "ca_file"):
        p = v[key]
        if p is not None and not Path(p).is_file():
            bad(key, f"{p} does not exist or is not a file")
    styles = list(v["styles"])
    wrong = [s for s in styles if s not in STYLES]
    if wrong or not styles:
        bad("styles", f"{', '.join(wrong) or '(empty)'}: choose from {', '.join(STYLES)}")
    forms = list(v["altsecid_forms"])
    wrong = [f for f in forms if f not in ALTSECID_FORMS]
    if wrong or ("altsecid" in styles and not forms):
        bad("altsecid_forms", f"{', '.join(wrong) or '(empty)'}: choose from {', '.join(ALTSECID_FORMS)}")
    attr = str(v["account_attribute"])
    if not attr or not all(c.isalnum() or c == "-" for c in attr) or not attr[0].isalpha():
        bad("account_attribute", f"{attr!r} is not an attribute name")
    if v["filter"]:
        why = filter_problem(str(v["filter"]))
        if why:
            bad("filter", f"{v['filter']!r}: {why}")
    return problems
