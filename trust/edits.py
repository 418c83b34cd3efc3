"""Plan trust-store edits for the CLI: what to write or delete, checked before any write.

Every planner returns a :class:`Plan` (``changes`` for :func:`trust.store.apply_changes`
plus messages) or raises :class:`EditError` with an operator-readable reason. The CLI
then validates the whole resulting store with ``load_store(..., changes=plan.changes)``
before touching the folder, so an edit can never leave a broken store behind.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import certinfo
from .store import PINNED_DIR, STORE_SUFFIXES, StoreEntry, TrustGeneration, issuer_key, parse_objects


class EditError(Exception):
    """The edit is refused; the message says what and why."""


@dataclass
class Plan:
    """Files to write (bytes) or delete (None), relative to the store, and what to say."""

    changes: dict[str, bytes | None] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def slug(text: str) -> str:
    """A safe, visible file stem from a CN: letters, digits, ``._-``; never hidden."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:48]
    return s or "certificate"


def check_name(name: str) -> str:
    """A user-chosen file name: plain, visible, with a store suffix (``.pem`` added)."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name in ("..",):
        raise EditError(f"--name {name!r} must be a plain, visible file name (no '/', not starting with '.')")
    if not name.lower().endswith(STORE_SUFFIXES):
        name += ".pem"
    return name


def _pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return obj.public_bytes(Encoding.PEM)


def _label(cert: x509.Certificate) -> str:
    return certinfo.label(cert.subject)


def _free_name(stem: str, suffix: str, prefix: str, taken: set[str], fp: str) -> str:
    rel = f"{prefix}{stem}{suffix}"
    if rel in taken:
        rel = f"{prefix}{stem}-{fp[:12]}{suffix}"
    return rel


def _existing_files(gen: TrustGeneration) -> set[str]:
    return {e.file for e in gen.entries} | {f.rstrip("/") for f, _ in gen.ignored}


def check_cert_common(cert: x509.Certificate, gen: TrustGeneration, now: _dt.datetime, min_rsa_bits: int,
                      pending: set[str]) -> str:
    """Refuse expired, not yet valid (allowed), weak or duplicate certificates; returns the fingerprint."""
    fp = certinfo.fingerprint(cert)
    label = _label(cert)
    if certinfo.not_after(cert) < now:
        raise EditError(f"{label} expired on {certinfo.not_after(cert):%Y-%m-%d %H:%M}Z; refusing to add it")
    kp = certinfo.key_problem(cert, min_rsa_bits)
    if kp:
        raise EditError(f"{label}: {kp[1]}; refusing to add it")
    existing = gen.by_fingerprint.get(fp)
    if existing is not None:
        raise EditError(f"{label} is already in the store as {existing.file} (sha256 {fp})")
    if fp in pending:
        raise EditError(f"{label} appears twice in the input")
    pending.add(fp)
    return fp


def plan_pin(cert: x509.Certificate, gen: TrustGeneration, now: _dt.datetime, *, min_rsa_bits: int,
             allow_missing_eku: bool, name: str | None = None) -> Plan:
    """Pin one client certificate: not a CA, current, client usage, strong key, new."""
    label = _label(cert)
    if certinfo.is_ca(cert):
        raise EditError(f"{label} is a CA certificate; add it without --pin to trust what it issues")
    fp = check_cert_common(cert, gen, now, min_rsa_bits, set())
    usage = certinfo.client_usage_problem(cert, allow_missing_eku)
    if usage:
        raise EditError(f"{label} cannot authenticate a client: {usage[1]}")
    taken = _existing_files(gen)
    cns = certinfo.cn_values(cert.subject)
    rel = (f"{PINNED_DIR}/{check_name(name)}" if name
           else _free_name(slug(cns[0] if cns else fp[:16]), ".pem", PINNED_DIR + "/", taken, fp))
    if rel in taken:
        raise EditError(f"{rel} already exists in the store; choose another --name")
    plan = Plan({rel: _pem(cert)})
    plan.messages.append(f"pinned {label} as {rel} (sha256 {fp})")
    if certinfo.not_before(cert) > now:
        plan.messages.append(f"note: {label} is not valid before {certinfo.not_before(cert):%Y-%m-%d %H:%M}Z")
    return plan


def plan_add(certs: list[x509.Certificate], crls: list[x509.CertificateRevocationList], gen: TrustGeneration,
             now: _dt.datetime, *, min_rsa_bits: int, name: str | None = None,
             skip_duplicates: bool = False) -> Plan:
    """Add CA certificates (each to its own file) and CRLs (replacing the CA's older CRL file)."""
    if not certs and not crls:
        raise EditError("nothing to add: no certificate or CRL found")
    if name and len(certs) + len(crls) != 1:
        raise EditError("--name can only be used when the file holds a single certificate or CRL")
    plan = Plan()
    taken = _existing_files(gen)
    pending: set[str] = set()
    for cert in certs:
        label = _label(cert)
        if not certinfo.is_ca(cert):
            raise EditError(f"{label} is not a CA certificate (no BasicConstraints CA:TRUE); "
                            "to admit this one client certificate use --pin")
        fp = certinfo.fingerprint(cert)
        if skip_duplicates and fp in gen.by_fingerprint:
            plan.messages.append(f"skipped {label}: already in the store as {gen.by_fingerprint[fp].file}")
            continue
        check_cert_common(cert, gen, now, min_rsa_bits, pending)
        cns = certinfo.cn_values(cert.subject)
        rel = check_name(name) if name else _free_name(slug(cns[0] if cns else label), ".pem", "", taken, fp)
        if rel in taken:
            raise EditError(f"{rel} already exists in the store; choose another --name")
        taken.add(rel)
        plan.changes[rel] = _pem(cert)
        kind = "root CA" if certinfo.is_self_signed(cert) else "intermediate CA"
        plan.messages.append(f"added {kind} {label} as {rel} (sha256 {fp})")
    for crl in crls:
        _plan_crl(crl, gen, now, plan, taken, name)
    if not plan.changes:
        raise EditError("nothing to add: " + "; ".join(plan.messages))
    return plan


def _plan_crl(crl: x509.CertificateRevocationList, gen: TrustGeneration, now: _dt.datetime, plan: Plan,
              taken: set[str], name: str | None) -> None:
    issuer = certinfo.label(crl.issuer)
    nu = crl.next_update_utc
    if nu is not None and nu < now:
        raise EditError(f"the CRL of {issuer} expired on {nu:%Y-%m-%d %H:%M}Z (nextUpdate passed); "
                        "refusing to add it")
    older = [e for e in gen.crls if e.crl is not None and e.crl.issuer == crl.issuer]
    for e in older:
        if e.crl is not None and crl.last_update_utc < e.crl.last_update_utc:
            raise EditError(f"the CRL of {issuer} is older than {e.file} already in the store "
                            f"(lastUpdate {crl.last_update_utc:%Y-%m-%d %H:%M}Z < "
                            f"{e.crl.last_update_utc:%Y-%m-%d %H:%M}Z)")
    same_file = [e for e in older if sum(1 for x in gen.entries if x.file == e.file) == 1]
    if same_file and not name:
        rel = same_file[0].file
        plan.messages.append(f"replaced the CRL of {issuer} in {rel} ({len(crl)} revoked)")
    else:
        rel = check_name(name) if name else f"{slug(certinfo.display_cn(crl.issuer))}.crl"
        if rel in taken:
            raise EditError(f"{rel} already exists in the store; choose another --name")
        plan.messages.append(f"added the CRL of {issuer} as {rel} ({len(crl)} revoked)")
    taken.add(rel)
    plan.changes[rel] = _pem(crl)


def find_entries(gen: TrustGeneration, target: str) -> list[StoreEntry]:
    """Entries named by a fingerprint, a unique fingerprint prefix (>= 8 hex), or a file name."""
    t = target.strip()
    fp = certinfo.normalize_fingerprint(t)
    if fp is not None:
        return [e for e in gen.entries if e.fingerprint == fp]
    by_file = [e for e in gen.entries if e.file == t] or [e for e in gen.entries if e.file == f"{PINNED_DIR}/{t}"]
    if by_file:
        return by_file
    h = t.lower().replace(":", "")
    if len(h) >= 8 and all(c in "0123456789abcdef" for c in h):
        found = [e for e in gen.entries if e.fingerprint.startswith(h)]
        if len(found) > 1:
            raise EditError(f"fingerprint prefix {t} is ambiguous: " + ", ".join(e.file for e in found))
        return found
    return []


def plan_remove(gen: TrustGeneration, target: str) -> Plan:
    """Remove the file holding the target; CRLs issued by a removed CA go with it."""
    entries = find_entries(gen, target)
    if not entries:
        raise EditError(f"{target!r} is neither a fingerprint nor a file of the trust store "
                        "(see `certgate trust list`)")
    files = {e.file for e in entries}
    by_fp = certinfo.normalize_fingerprint(target) is not None or target not in files
    for f in files:
        count = sum(1 for e in gen.entries if e.file == f)
        if by_fp and count > 1:
            raise EditError(f"{f} holds {count} certificates/CRLs; remove the whole file with "
                            f"`certgate trust remove {f}` or edit it by hand")
    plan = Plan({f: None for f in files})
    removed = [e for e in gen.entries if e.file in files]
    for e in removed:
        plan.messages.append(f"removed {e.kind} {e.subject} ({e.file}, sha256 {e.fingerprint})")
    keys = {issuer_key(e.cert) for e in removed if e.kind == "CA" and e.cert is not None}
    for k, crl_entries in gen.crls_by_issuer.items():
        if k in keys:
            for c in crl_entries:
                if c.file not in plan.changes:
                    plan.changes[c.file] = None
                    plan.messages.append(f"removed CRL {c.file} too: it was issued by the removed CA")
    return plan


def read_certificates(data: bytes, source: str) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    """Parse a PEM/DER file given on the command line; EditError names the file."""
    try:
        return parse_objects(data)
    except ValueError as exc:
        raise EditError(f"{source}: {exc}") from None
