"""Load a trust-store folder into an immutable :class:`TrustGeneration` (atomic edits: :mod:`trust.folder`).

Store layout (see ``docs/trust.md``)::

    STORE/                 CA certificates (roots and intermediates) and CRLs
      corp-root.pem        PEM (one or several blocks) or DER; .pem .crt .cer .der .crl
      corp-root.crl        a CRL must be issued (and signed) by a CA of this folder
      pinned/              pinned client certificates, one per file
        alice.pem          accepted on an exact SHA-256 match only

Hidden files, editor temporaries (``*~``, ``.#*``, ``*.swp``, ``*.tmp``) and other
suffixes are ignored (reported in ``TrustGeneration.ignored``). Loading is all or nothing:
any broken file makes :func:`load_store` raise :class:`TrustStoreError` listing *every*
broken file, so a caller keeps its previous generation.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Mapping

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import Store

from . import certinfo

Kind = Literal["CA", "pinned", "CRL"]
PINNED_DIR = "pinned"
STORE_SUFFIXES = (".pem", ".crt", ".cer", ".der", ".crl")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class StoreProblem:
    """A broken store file: its path relative to the store folder, and why."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class TrustStoreError(Exception):
    """The store cannot be loaded; ``problems`` names every broken file with its reason."""

    def __init__(self, problems: list[StoreProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class StoreEntry:
    """One certificate or CRL of the store, as listed by ``certgate trust list``.

    For a CRL, ``not_before``/``not_after`` are its lastUpdate/nextUpdate and ``serial``
    is None; ``revoked`` counts its entries.
    """

    kind: Kind
    file: str
    subject: str
    issuer: str
    fingerprint: str
    not_before: _dt.datetime
    not_after: _dt.datetime | None
    serial: int | None
    key: str
    self_signed: bool
    warnings: tuple[str, ...] = ()
    cert: x509.Certificate | None = field(default=None, repr=False, compare=False)
    crl: x509.CertificateRevocationList | None = field(default=None, repr=False, compare=False)
    revoked: int = 0

    def days_left(self, now: _dt.datetime) -> int | None:
        """Whole days until ``not_after`` (negative once past), None without an end."""
        if self.not_after is None:
            return None
        return int((self.not_after - now).total_seconds() // 86400)


IssuerKey = tuple[bytes, str]  # (issuer subject DER, issuer SPKI sha256)


def issuer_key(ca: x509.Certificate) -> IssuerKey:
    """Identify an issuing CA by name *and* key (never by name alone)."""
    return ca.subject.public_bytes(), certinfo.spki_sha256(ca)


@dataclass(frozen=True)
class TrustGeneration:
    """An immutable, fully validated snapshot of the trust store.

    ``digest`` is a SHA-256 over the names and bytes of the loaded files: equal contents
    give an equal digest. ``cas``/``pinned``/``crls`` are the entries of each kind;
    ``client_ca_certs`` are the certificates whose subjects the TLS layer advertises
    (every CA plus self-signed pinned certificates).
    """

    folder: Path
    digest: str
    loaded_at: _dt.datetime
    entries: tuple[StoreEntry, ...]
    ignored: tuple[tuple[str, str], ...]
    by_fingerprint: Mapping[str, StoreEntry] = field(repr=False, compare=False)
    crls_by_issuer: Mapping[IssuerKey, tuple[StoreEntry, ...]] = field(repr=False, compare=False)
    anchors: Store | None = field(repr=False, compare=False)

    @property
    def cas(self) -> tuple[StoreEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "CA")

    @property
    def pinned(self) -> tuple[StoreEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "pinned")

    @property
    def crls(self) -> tuple[StoreEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "CRL")

    @property
    def ca_certs(self) -> tuple[x509.Certificate, ...]:
        """The trust anchors: every CA certificate of the store (roots and intermediates)."""
        return tuple(e.cert for e in self.cas if e.cert is not None)

    @property
    def client_ca_certs(self) -> tuple[x509.Certificate, ...]:
        """Certificates whose subjects go into the TLS CertificateRequest CA list."""
        out = [e.cert for e in self.cas if e.cert is not None]
        out += [e.cert for e in self.pinned if e.cert is not None and e.self_signed]
        return tuple(out)

    def pinned_entry(self, fingerprint: str) -> StoreEntry | None:
        """The pinned entry with exactly this SHA-256 fingerprint, if any."""
        e = self.by_fingerprint.get(fingerprint)
        return e if e is not None and e.kind == "pinned" else None

    def ca_entry(self, fingerprint: str) -> StoreEntry | None:
        """The CA entry with exactly this SHA-256 fingerprint, if any."""
        e = self.by_fingerprint.get(fingerprint)
        return e if e is not None and e.kind == "CA" else None


# --------------------------------------------------------------------------- reading


def is_ignored_name(name: str) -> bool:
    """Hidden files and editor temporaries are never part of the store."""
    return (name.startswith(".") or name.endswith("~") or name.endswith(".swp")
            or name.endswith(".tmp") or name.startswith("#"))


def parse_objects(data: bytes) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    """Certificates and CRLs in a PEM (any number of blocks) or DER (exactly one) blob.

    Raises ``ValueError`` with an operator-readable reason for anything else, including
    private keys (a trust store never holds keys).
    """
    if not data.strip():
        raise ValueError("file is empty")
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    if b"-----BEGIN" in data:
        blocks = list(_PEM_BLOCK.finditer(data))
        if not blocks:
            raise ValueError("PEM armour without a complete BEGIN/END block")
        for n, m in enumerate(blocks, 1):
            label = m.group(1).decode("ascii")
            if "PRIVATE KEY" in label:
                raise ValueError(f"PEM block {n} is a {label}: the trust store holds only "
                                 "certificates and CRLs, keep private keys elsewhere")
            try:
                if label in ("CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CERTIFICATE"):
                    cert = x509.load_pem_x509_certificate(m.group(0).replace(
                        f"-----BEGIN {label}-----".encode(), b"-----BEGIN CERTIFICATE-----").replace(
                        f"-----END {label}-----".encode(), b"-----END CERTIFICATE-----"))
                    _touch(cert)
                    certs.append(cert)
                elif label == "X509 CRL":
                    crl = x509.load_pem_x509_crl(m.group(0))
                    _ = crl.extensions, list(crl)
                    crls.append(crl)
                else:
                    raise ValueError(f"PEM block {n} is a '{label}', not a certificate or CRL")
            except ValueError as exc:
                if str(exc).startswith("PEM block"):
                    raise
                raise ValueError(f"PEM block {n} ({label}) cannot be parsed: {exc}") from None
        return certs, crls
    try:
        cert = x509.load_der_x509_certificate(data)
        _touch(cert)
        return [cert], []
    except ValueError as cert_exc:
        try:
            crl = x509.load_der_x509_crl(data)
            _ = crl.extensions, list(crl)
            return [], [crl]
        except ValueError:
            raise ValueError("not a PEM file and not a DER certificate or CRL "
                             f"(DER certificate parse error: {cert_exc})") from None


def _touch(cert: x509.Certificate) -> None:
    # Extensions and the validity dates are parsed lazily: force it so a bad file is
    # reported at load time, not in the middle of a handshake.
    _ = cert.extensions, cert.not_valid_after_utc, cert.not_valid_before_utc, cert.subject, cert.issuer


def _collect(folder: Path, changes: Mapping[str, bytes | None] | None
             ) -> tuple[dict[str, bytes], list[tuple[str, str]], list[StoreProblem]]:
    files: dict[str, bytes] = {}
    ignored: list[tuple[str, str]] = []
    problems: list[StoreProblem] = []
    if not folder.exists():
        raise TrustStoreError([StoreProblem(str(folder), "trust store folder does not exist")])
    if not folder.is_dir():
        raise TrustStoreError([StoreProblem(str(folder), "trust store path is not a folder")])

    def scan(d: Path, prefix: str) -> None:
        try:
            names = sorted(os.listdir(d))
        except OSError as exc:
            problems.append(StoreProblem(prefix or str(folder), f"cannot list folder: {exc.strerror}"))
            return
        for name in names:
            if is_ignored_name(name):
                continue
            rel = prefix + name
            p = d / name
            if p.is_dir():
                if not prefix and name == PINNED_DIR:
                    scan(p, PINNED_DIR + "/")
                else:
                    ignored.append((rel + "/", "subfolder ignored (only pinned/ is read)"))
                continue
            if not name.lower().endswith(STORE_SUFFIXES):
                ignored.append((rel, "not a .pem/.crt/.cer/.der/.crl file"))
                continue
            try:
                files[rel] = p.read_bytes()
            except OSError as exc:
                problems.append(StoreProblem(rel, f"cannot read: {exc.strerror}"))

    scan(folder, "")
    for rel, data in (changes or {}).items():
        if data is None:
            files.pop(rel, None)
        else:
            files[rel] = data
    return files, ignored, problems


def load_store(folder: Path | str, *, now: _dt.datetime, min_rsa_bits: int = certinfo.RSA_FLOOR,
               changes: Mapping[str, bytes | None] | None = None) -> TrustGeneration:
    """Read and validate the whole store folder; return a new immutable generation.

    ``changes`` (relative path -> new bytes, or None to delete) lets the CLI validate the
    store *as it would be* after an edit, before writing anything.

    Guarantees: every certificate parses; top-level certificates are CAs; pinned files
    hold exactly one non-CA certificate whose EKU (if any) allows clientAuth; keys are
    RSA >= ``min_rsa_bits``, EC P-256/P-384 or Ed25519; no certificate appears twice;
    every CRL is signed by the key of a CA in the store. Expired certificates and CRLs
    load with a warning (verification refuses them). Does not check chains between CAs.

    Raises :class:`TrustStoreError` listing every broken file.
    """
    folder = Path(folder)
    files, ignored, problems = _collect(folder, changes)
    entries: list[StoreEntry] = []
    seen: dict[str, str] = {}
    pending_crls: list[tuple[str, x509.CertificateRevocationList]] = []
    digest = hashlib.sha256()
    for rel in sorted(files):
        data = files[rel]
        raw_name = rel.encode("utf-8", "surrogateescape")
        digest.update(len(raw_name).to_bytes(4, "big") + raw_name + len(data).to_bytes(8, "big") + data)
        try:
            certs, crls = parse_objects(data)
        except ValueError as exc:
            problems.append(StoreProblem(rel, str(exc)))
            continue
        pinned = rel.startswith(PINNED_DIR + "/")
        file_problems: list[str] = []
        if pinned and (len(certs) != 1 or crls):
            file_problems.append(f"a pinned file must hold exactly one certificate and no CRL "
                                 f"(found {len(certs)} certificate(s), {len(crls)} CRL(s))")
        for cert in certs:
            fp = certinfo.fingerprint(cert)
            subj = certinfo.label(cert.subject)
            if fp in seen:
                file_problems.append(f"certificate {subj} is already in the store as {seen[fp]}")
                continue
            seen[fp] = rel
            kp = certinfo.key_problem(cert, min_rsa_bits)
            if kp:
                file_problems.append(f"certificate {subj}: {kp[1]}")
            if pinned:
                if certinfo.is_ca(cert):
                    file_problems.append(f"certificate {subj} is a CA (BasicConstraints CA:TRUE); "
                                         "CA certificates belong in the store folder, not in pinned/")
                usage = certinfo.client_usage_problem(cert, allow_missing_eku=True)
                if usage:
                    file_problems.append(f"certificate {subj} cannot be a client certificate: {usage[1]}")
            elif not certinfo.is_ca(cert):
                file_problems.append(f"certificate {subj} is not a CA (no BasicConstraints CA:TRUE); "
                                     "client certificates to pin belong in pinned/")
            entries.append(_cert_entry("pinned" if pinned else "CA", rel, cert, fp, now))
        pending_crls.extend((rel, c) for c in crls)
        for reason in file_problems:
            problems.append(StoreProblem(rel, reason))

    cas = [e for e in entries if e.kind == "CA"]
    crls_by_issuer: dict[IssuerKey, list[StoreEntry]] = {}
    for rel, crl in pending_crls:
        entry, reason = _crl_entry(rel, crl, cas, now)
        if entry is None:
            problems.append(StoreProblem(rel, reason))
            continue
        key, ent = entry
        crls_by_issuer.setdefault(key, []).append(ent)
        entries.append(ent)
    if problems:
        raise TrustStoreError(sorted(problems, key=lambda p: p.file))

    entries.sort(key=lambda e: (e.file, e.kind, e.fingerprint))
    ca_certs = [e.cert for e in cas if e.cert is not None]
    return TrustGeneration(
        folder=folder, digest=digest.hexdigest(), loaded_at=now, entries=tuple(entries),
        ignored=tuple(ignored),
        by_fingerprint=MappingProxyType({e.fingerprint: e for e in entries if e.kind != "CRL"}),
        crls_by_issuer=MappingProxyType({k: tuple(v) for k, v in crls_by_issuer.items()}),
        anchors=Store(ca_certs) if ca_certs else None)


def _cert_entry(kind: Kind, rel: str, cert: x509.Certificate, fp: str, now: _dt.datetime) -> StoreEntry:
    warnings = []
    na, nb = certinfo.not_after(cert), certinfo.not_before(cert)
    if na < now:
        warnings.append(f"expired on {na:%Y-%m-%d %H:%M}Z")
    elif nb > now:
        warnings.append(f"not valid before {nb:%Y-%m-%d %H:%M}Z")
    return StoreEntry(kind=kind, file=rel, subject=certinfo.subject_text(cert.subject),
                      issuer=certinfo.subject_text(cert.issuer), fingerprint=fp, not_before=nb,
                      not_after=na, serial=cert.serial_number, key=certinfo.describe_key(cert),
                      self_signed=certinfo.is_self_signed(cert), warnings=tuple(warnings), cert=cert)


def _crl_entry(rel: str, crl: x509.CertificateRevocationList, cas: list[StoreEntry], now: _dt.datetime
               ) -> tuple[tuple[IssuerKey, StoreEntry] | None, str]:
    issuer = certinfo.label(crl.issuer)
    unsupported = _crl_unsupported(crl)
    if unsupported:
        return None, unsupported
    same_name = [e for e in cas if e.cert is not None and e.cert.subject == crl.issuer]
    if not same_name:
        return None, f"CRL issuer {issuer} is not a CA of this store (add the CA first)"
    for ca in same_name:
        assert ca.cert is not None
        try:
            ok = crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ok = False
        if not ok:
            continue
        warnings = []
        nu = crl.next_update_utc
        if nu is not None and nu < now:
            warnings.append(f"CRL expired on {nu:%Y-%m-%d %H:%M}Z (nextUpdate passed)")
        fp = hashlib.sha256(crl.public_bytes(Encoding.DER)).hexdigest()
        exact = certinfo.subject_text(crl.issuer)
        ent = StoreEntry(kind="CRL", file=rel, subject=exact, issuer=exact, fingerprint=fp,
                         not_before=crl.last_update_utc, not_after=nu, serial=None,
                         key=f"signed by {ca.file}", self_signed=False, warnings=tuple(warnings),
                         crl=crl, revoked=len(crl))
        return (issuer_key(ca.cert), ent), ""
    files = ", ".join(e.file for e in same_name)
    return None, (f"CRL signature does not verify with the key of CA {issuer} ({files}): "
                  "it was signed by another key")


def _crl_unsupported(crl: x509.CertificateRevocationList) -> str | None:
    # Only complete, direct CRLs are understood; a delta, indirect or partitioned CRL taken
    # as complete could make an unlisted serial look good.
    for ext in crl.extensions:
        if isinstance(ext.value, x509.DeltaCRLIndicator):
            return "delta CRLs are not supported: add the complete CRL of this CA"
        if isinstance(ext.value, x509.IssuingDistributionPoint):
            idp = ext.value
            if idp.indirect_crl or idp.only_some_reasons or idp.only_contains_attribute_certs:
                return "indirect or partitioned CRLs (IssuingDistributionPoint) are not supported"
        elif ext.critical:
            name = getattr(ext.oid, "_name", None) or ext.oid.dotted_string
            return f"the CRL has an unsupported critical extension {name}"
    return None


def entry_warnings(entry: StoreEntry, now: _dt.datetime, warn_days: int) -> list[str]:
    """What ``certgate trust list`` (and the gateway's log) should warn about for one entry.

    Load-time warnings (expired...), "expires in N days" within ``warn_days``, a CRL whose
    next update is less than a day away, a pinned certificate without EKU.
    """
    out = list(entry.warnings)
    if entry.not_after is not None and entry.not_after >= now:
        left = entry.not_after - now
        if entry.kind == "CRL":
            if left < _dt.timedelta(days=1):
                out.append(f"CRL next update in {int(left.total_seconds() // 3600)} hours")
        else:
            days = int(left.total_seconds() // 86400)
            if days <= warn_days:
                out.append(f"expires in {days} day{'s' if days != 1 else ''}")
    if entry.kind == "pinned" and entry.cert is not None and certinfo.ext_key_usages(entry.cert) is None:
        out.append("no EKU: accepted only with unsafe_allow_missing_eku = yes")
    return out


def expiry_warnings(generation: TrustGeneration, now: _dt.datetime, warn_days: int) -> list[str]:
    """Every entry warning of a generation as ``"FILE (KIND SUBJECT): warning"`` lines."""
    return [f"{e.file} ({e.kind} {certinfo.printable_repr(e.subject)}): {w}"
            for e in generation.entries for w in entry_warnings(e, now, warn_days)]
