"""Certificate -> account mapping, and the exact comparison with a submitted account.

Rules (``[trust] mapping``): ``cn`` (default, JOC's rule), ``san-email``, ``san-upn``
(Microsoft UPN otherName), ``regex`` over the RFC 4514 subject, ``file`` (fingerprint or
subject -> account); ``ldap`` is asked of a directory (:mod:`trust.directory`,
:mod:`proxy.listener.directory`), so :func:`map_account` only refuses it. Every mapped account must be printable ASCII without control
characters, leading/trailing spaces, and at most 64 characters. This module does not
check trust: map only certificates that :func:`trust.verify.verify` accepted.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from . import certinfo

if TYPE_CHECKING:
    from .presented import PresentedCertificate

#: Microsoft User Principal Name otherName OID (AD / FreeIPA smart cards).
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
MAX_ACCOUNT = 64

MappingRule = Literal["cn", "san-email", "san-upn", "regex", "file", "ldap"]


@dataclass(frozen=True)
class MappingSettings:
    """How a certificate maps to an account (``[trust] mapping*``, parsed by :mod:`trust.settings`)."""

    rule: MappingRule = "cn"
    strip_domain: bool = False
    regex: str | None = None
    map_file: Path | None = None


@dataclass(frozen=True)
class MappingResult:
    """The mapped account, or None with the reason why the certificate maps to nobody."""

    account: str | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.account is not None


def account_problem(value: str, what: str = "account") -> str | None:
    """Why ``value`` is not an acceptable account name, or None.

    Accepts printable ASCII (U+0020..U+007E) only, 1..64 characters, no leading or
    trailing space. Everything else (NUL, CR/LF, other controls, any non-ASCII letter
    such as a Cyrillic look-alike or a full-width digit) is refused, never normalised.
    """
    if not value:
        return f"{what} is empty"
    if len(value) > MAX_ACCOUNT:
        return f"{what} is {len(value)} characters long (at most {MAX_ACCOUNT})"
    for i, ch in enumerate(value):
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            return f"{what} contains the control character U+{o:04X} at position {i}"
        if o > 0x7E:
            return f"{what} contains the non-ASCII character U+{o:04X} at position {i} (only printable ASCII)"
    if value != value.strip(" "):
        return f"{what} has leading or trailing spaces"
    return None


def _checked(value: str, what: str) -> MappingResult:
    problem = account_problem(value, what)
    if problem:
        return MappingResult(None, f"{problem}: {certinfo.printable_repr(value)!s}")
    return MappingResult(value, None)


def map_cn(cert: x509.Certificate) -> MappingResult:
    """JOC's rule: exactly one CN in the subject, not in a multi-valued RDN, printable."""
    for rdn in cert.subject.rdns:
        if len(rdn) > 1 and any(a.oid == NameOID.COMMON_NAME for a in rdn):
            return MappingResult(None, "the CN is part of a multi-valued RDN (CN+...); refused as ambiguous")
    cns = certinfo.cn_values(cert.subject)
    if len(cns) != 1:
        shown = ", ".join(certinfo.printable_repr(c) for c in cns)
        return MappingResult(None, f"the subject has {len(cns)} CN attributes ({shown or 'none'}); "
                                   "exactly one is required")
    return _checked(cns[0], "the CN")


def san_values(cert: x509.Certificate) -> tuple[list[str], list[str], str | None]:
    """``(emails, upns, error)`` from the SubjectAlternativeName extension.

    A UPN that is not a DER UTF8String gives ``error``.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], None
    emails = [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
    upns: list[str] = []
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id != UPN_OID:
            continue
        value = decode_utf8string(other.value)
        if value is None:
            return emails, upns, "a UPN otherName is not a DER UTF8String"
        upns.append(value)
    return emails, upns, None


def decode_utf8string(der: bytes) -> str | None:
    """Decode a DER UTF8String (tag 0x0C, definite length), None if anything is off."""
    if len(der) < 2 or der[0] != 0x0C:
        return None
    n, pos = der[1], 2
    if n & 0x80:
        count = n & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            return None
        n, pos = int.from_bytes(der[2:2 + count], "big"), 2 + count
    if len(der) != pos + n:
        return None
    try:
        return der[pos:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def map_san(cert: x509.Certificate, kind: str) -> MappingResult:
    """``san-email`` / ``san-upn``: exactly one such SAN entry, printable ASCII."""
    emails, upns, error = san_values(cert)
    if error:
        return MappingResult(None, error)
    values, label = (emails, "e-mail") if kind == "san-email" else (upns, "UPN")
    if len(values) != 1:
        return MappingResult(None, f"the certificate has {len(values)} subjectAltName {label} entries; "
                                   "exactly one is required")
    return _checked(values[0], f"the SAN {label}")


def map_regex(cert: x509.Certificate, pattern: str) -> MappingResult:
    """``regex``: full match over the RFC 4514 subject; capture group 1 is the account."""
    subject = certinfo.subject_text(cert.subject)
    try:
        m = re.fullmatch(pattern, subject)
    except re.error as exc:
        return MappingResult(None, f"mapping_regex is invalid: {exc}")
    if m is None:
        return MappingResult(None, f"the subject {certinfo.printable_repr(subject)} does not match mapping_regex")
    if m.re.groups != 1 or m.group(1) is None:
        return MappingResult(None, "mapping_regex must have exactly one capture group, and it must match")
    return _checked(m.group(1), "the regex capture")


@dataclass(frozen=True)
class MapTable:
    """A parsed map file: fingerprint -> account and subject -> account."""

    by_fingerprint: dict[str, str]
    by_subject: dict[x509.Name, str]


class MapFileError(ValueError):
    """The map file is unreadable or has bad lines; ``errors`` lists ``"file:line: why"``."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def parse_map_file(text: str, source: str = "map file") -> MapTable:
    """Parse lines ``sha256:<hex> ACCOUNT`` or ``subject:<RFC 4514 DN> ACCOUNT``.

    ``#`` starts a comment line; blank lines are skipped. The account is the last
    whitespace-separated word. Raises :class:`MapFileError` listing every bad line.
    """
    by_fp: dict[str, str] = {}
    by_subject: dict[x509.Name, str] = {}
    errors: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            errors.append(f"{source}:{n}: expected 'sha256:<hex> ACCOUNT' or 'subject:<DN> ACCOUNT'")
            continue
        key, account = parts
        problem = account_problem(account)
        if problem:
            errors.append(f"{source}:{n}: {problem}")
            continue
        if key.startswith("sha256:"):
            fp = certinfo.normalize_fingerprint(key)
            if fp is None:
                errors.append(f"{source}:{n}: '{key}' is not a SHA-256 fingerprint (64 hex digits)")
            elif fp in by_fp:
                errors.append(f"{source}:{n}: fingerprint already mapped to {by_fp[fp]}")
            else:
                by_fp[fp] = account
        elif key.startswith("subject:"):
            try:
                name = x509.Name.from_rfc4514_string(key[len("subject:"):].strip())
            except ValueError as exc:
                errors.append(f"{source}:{n}: the DN cannot be parsed: {exc}")
                continue
            if name in by_subject:
                errors.append(f"{source}:{n}: subject already mapped to {by_subject[name]}")
            else:
                by_subject[name] = account
        else:
            errors.append(f"{source}:{n}: a line starts with 'sha256:' or 'subject:'")
    if errors:
        raise MapFileError(errors)
    return MapTable(by_fp, by_subject)


_map_cache: dict[Path, tuple[tuple[int, int, int], MapTable]] = {}
_map_lock = threading.Lock()


def load_map_file(path: Path) -> MapTable:
    """The parsed map file, re-read only when its size, mtime or inode changes."""
    try:
        st = os.stat(path)
        sig = (st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError as exc:
        raise MapFileError([f"{path}: cannot read: {exc.strerror}"]) from None
    with _map_lock:
        cached = _map_cache.get(path)
        if cached and cached[0] == sig:
            return cached[1]
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MapFileError([f"{path}: cannot read: {exc}"]) from None
    table = parse_map_file(text, str(path))
    with _map_lock:
        _map_cache[path] = (sig, table)
    return table


def map_file(cert: x509.Certificate, path: Path, fingerprint: str | None = None) -> MappingResult:
    """``file``: exact fingerprint first, then the exact subject (attribute by attribute).

    ``fingerprint``, when given, is ``cert``'s (already computed by the caller)."""
    try:
        table = load_map_file(path)
    except MapFileError as exc:
        return MappingResult(None, f"map file unusable: {exc}")
    account = table.by_fingerprint.get(fingerprint or certinfo.fingerprint(cert))
    if account is None:
        account = table.by_subject.get(cert.subject)
    if account is None:
        return MappingResult(None, f"neither the fingerprint nor the subject is listed in {path}")
    return MappingResult(account, None)


def map_presented(cert: PresentedCertificate, settings: MappingSettings) -> MappingResult:
    """:func:`map_account` for the certificate presented in a handshake (its parsed leaf and
    its fingerprint are reused; nothing is parsed again)."""
    leaf = cert.parsed_leaf
    if leaf is None:
        return MappingResult(None, f"the certificate cannot be read: {cert.parse_error}")
    return map_account(leaf, settings, fingerprint=cert.fingerprint)


def map_account(cert: x509.Certificate, settings: MappingSettings, *, fingerprint: str | None = None
                ) -> MappingResult:
    """Map a (verified) certificate to an account with the configured rule.

    Never raises for certificate content: every refusal is a result with a reason.
    ``fingerprint``, when given, is ``cert``'s SHA-256 (the ``file`` rule looks it up).
    """
    try:
        if settings.rule == "cn":
            return map_cn(cert)
        if settings.rule in ("san-email", "san-upn"):
            return map_san(cert, settings.rule)
        if settings.rule == "regex":
            if not settings.regex:
                return MappingResult(None, "mapping = regex needs mapping_regex")
            return map_regex(cert, settings.regex)
        if settings.rule == "file":
            if settings.map_file is None:
                return MappingResult(None, "mapping = file needs mapping_file")
            return map_file(cert, settings.map_file, fingerprint)
        if settings.rule == "ldap":
            return MappingResult(None, "mapping = ldap is answered by the directory, not by the certificate "
                                       "alone (`certgate trust map --config FILE CERT` asks it)")
    except ValueError as exc:  # malformed extensions in the certificate
        return MappingResult(None, f"the certificate cannot be read: {exc}")
    return MappingResult(None, f"unknown mapping rule {settings.rule!r}")


def strip_domain_part(submitted: str) -> str:
    """``DOMAIN\\user`` -> ``user`` and ``user@domain`` -> ``user`` (JOC's stripping)."""
    if "\\" in submitted:
        submitted = submitted.split("\\", 1)[1]
    if "@" in submitted:
        submitted = submitted.rsplit("@", 1)[0]
    return submitted


def account_matches(mapped: str | None, submitted: str, strip_domain: bool) -> bool:
    """True when ``submitted`` equals ``mapped`` exactly (case-sensitive, no folding).

    With ``strip_domain`` the domain part is stripped from the *submitted* account first.
    Empty values and submitted names that are not printable ASCII never match.
    """
    if not mapped or not submitted:
        return False
    candidate = strip_domain_part(submitted) if strip_domain else submitted
    if account_problem(candidate) is not None:
        return False
    return candidate == mapped


def describe(cert: x509.Certificate, settings: MappingSettings) -> str:
    """Multi-line explanation of what ``cert`` maps to (``certgate trust map``).

    Shows the subject, CNs, SAN e-mails and UPNs, the configured rule's result and, for
    comparison, what the other certificate-only rules would give.
    """
    try:
        emails, upns, san_error = san_values(cert)
    except ValueError as exc:
        emails, upns, san_error = [], [], str(exc)
    lines = [f"subject:      {certinfo.printable_repr(certinfo.subject_text(cert.subject))}",
             f"fingerprint:  {certinfo.fingerprint(cert)}",
             f"CN values:    {', '.join(certinfo.printable_repr(v) for v in certinfo.cn_values(cert.subject)) or '-'}",
             f"SAN e-mails:  {', '.join(certinfo.printable_repr(v) for v in emails) or '-'}",
             f"SAN UPNs:     {', '.join(certinfo.printable_repr(v) for v in upns) or '-'}"]
    if san_error:
        lines.append(f"SAN problem:  {san_error}")
    result = map_account(cert, settings)
    rule = settings.rule + (f" ({settings.regex})" if settings.rule == "regex" else "") + (
        f" ({settings.map_file})" if settings.rule == "file" else "")
    lines.append(f"rule:         {rule}")
    if settings.rule == "ldap":
        lines.append("account:      asked of the directory (below)")
    elif result.account is not None:
        lines.append(f"account:      {result.account}")
        if settings.strip_domain:
            lines.append("login:        the submitted account is compared after stripping DOMAIN\\ and @domain")
    else:
        lines.append(f"account:      none ({result.reason})")
    others = []
    for other in ("cn", "san-email", "san-upn"):
        if other == settings.rule:
            continue
        r = map_cn(cert) if other == "cn" else map_san(cert, other)
        others.append(f"{other}={r.account if r.account is not None else 'none'}")
    lines.append(f"other rules:  {', '.join(others)}")
    if result.account is not None and settings.rule == "cn" and (emails or upns):
        conflicting = [v for v in emails + upns if v.split("@", 1)[0] != result.account]
        if conflicting:
            lines.append("note:         SAN entries name other identities "
                         f"({', '.join(conflicting)}); the cn rule ignores SANs")
    return "\n".join(lines)
