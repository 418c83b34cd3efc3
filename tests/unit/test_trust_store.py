"""trust.store: layout, formats, all-or-nothing loading with named errors, signatures, atomic writes."""

from __future__ import annotations

import ast
import datetime as dt
import os
from pathlib import Path

import pytest

from trust import issue as I
from trust.folder import apply_changes, atomic_write, folder_signature
from trust.store import TrustStoreError, load_store, parse_objects

NOW = I.utcnow()
DAY = dt.timedelta(days=1)
ROOT = I.ca("Store Root")
INTER = I.ca("Store Inter", issuer=ROOT)


def test_layout_pem_der_bundles_pinned_and_crls(tmp_path: Path):
    """CAs (PEM, DER, bundles) at the top, pinned/ for client certs, CRLs by content; kinds and digest."""
    (tmp_path / "root.pem").write_bytes(I.pem(ROOT.cert))
    (tmp_path / "inter.der").write_bytes(I.der(INTER.cert))
    ed, rsa = I.ca("Ed", key_type="ed25519"), I.ca("Rsa", key_type="rsa2048")
    (tmp_path / "bundle.crt").write_bytes(b"# comment\n" + I.pem(ed.cert) + I.pem(rsa.cert))
    (tmp_path / "root.crl").write_bytes(I.der(I.crl(ROOT, [7])))
    (tmp_path / "pinned").mkdir()
    selfie = I.client(None, "selfie")
    (tmp_path / "pinned" / "selfie.pem").write_bytes(selfie.cert_pem())
    g = load_store(tmp_path, now=NOW)
    kinds = sorted((e.kind, e.file) for e in g.entries)
    assert kinds == [("CA", "bundle.crt"), ("CA", "bundle.crt"), ("CA", "inter.der"), ("CA", "root.pem"),
                     ("CRL", "root.crl"), ("pinned", "pinned/selfie.pem")]
    assert len(g.cas) == 4 and len(g.pinned) == 1 and len(g.crls) == 1 and g.crls[0].revoked == 1
    assert set(g.client_ca_certs) == {ROOT.cert, INTER.cert, ed.cert, rsa.cert, selfie.cert}
    assert g.pinned_entry(selfie.fingerprint) is not None and g.ca_entry(selfie.fingerprint) is None
    assert g.loaded_at == NOW
    # the digest is stable for equal contents and changes with them
    assert load_store(tmp_path, now=NOW + DAY).digest == g.digest
    (tmp_path / "root.crl").write_bytes(I.der(I.crl(ROOT, [8])))
    assert load_store(tmp_path, now=NOW).digest != g.digest


def test_pinned_issued_by_untrusted_ca_is_not_advertised(tmp_path: Path):
    """Only self-signed pinned certificates join the CA list sent in the CertificateRequest."""
    (tmp_path / "pinned").mkdir()
    partner = I.client(I.ca("Partner CA"), "partner")
    (tmp_path / "pinned" / "partner.pem").write_bytes(partner.cert_pem())
    g = load_store(tmp_path, now=NOW)
    assert g.client_ca_certs == () and len(g.pinned) == 1


def test_ignored_files(tmp_path: Path):
    """Hidden files, editor temporaries, other suffixes and other folders are ignored (and listed)."""
    (tmp_path / "root.pem").write_bytes(I.pem(ROOT.cert))
    for junk in (".hidden.pem", "root.pem~", ".#root.pem", ".root.pem.swp", "x.pem.tmp", "#auto#"):
        (tmp_path / junk).write_bytes(b"garbage")
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "broken.pem").write_bytes(b"garbage")
    g = load_store(tmp_path, now=NOW)
    assert [e.file for e in g.entries] == ["root.pem"]
    assert dict(g.ignored) == {"README.txt": "not a .pem/.crt/.cer/.der/.crl file",
                               "old/": "subfolder ignored (only pinned/ is read)"}


def test_every_broken_file_is_named_and_nothing_is_half_applied(tmp_path: Path):
    """All broken files are reported, each with its reason; no generation is returned."""
    (tmp_path / "good.pem").write_bytes(I.pem(ROOT.cert))
    (tmp_path / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    (tmp_path / "empty.crt").write_bytes(b"")
    (tmp_path / "key.pem").write_bytes(ROOT.key_pem())
    (tmp_path / "leaf.pem").write_bytes(I.client(ROOT, "alice").cert_pem())
    (tmp_path / "weak.pem").write_bytes(I.pem(I.ca("Weak", key_type="rsa1024").cert))
    (tmp_path / "dup.pem").write_bytes(I.pem(ROOT.cert))
    (tmp_path / "binary.der").write_bytes(b"\x01\x02\x03")
    (tmp_path / "orphan.crl").write_bytes(I.pem(I.crl(I.ca("Elsewhere"))))
    (tmp_path / "pinned").mkdir()
    (tmp_path / "pinned" / "ca.pem").write_bytes(I.pem(INTER.cert))
    (tmp_path / "pinned" / "server.pem").write_bytes(I.pem(I.server(ROOT).cert))
    (tmp_path / "pinned" / "two.pem").write_bytes(I.client(INTER, "x").chain_pem())
    with pytest.raises(TrustStoreError) as err:
        load_store(tmp_path, now=NOW)
    reasons: dict[str, str] = {}
    for p in err.value.problems:
        reasons[p.file] = reasons[p.file] + " | " + p.reason if p.file in reasons else p.reason
    assert set(reasons) == {"garbage.pem", "empty.crt", "key.pem", "leaf.pem", "weak.pem", "binary.der",
                            "orphan.crl", "pinned/ca.pem", "pinned/server.pem", "pinned/two.pem", "good.pem"}
    assert "cannot be parsed" in reasons["garbage.pem"]
    assert reasons["empty.crt"] == "file is empty"
    assert "PRIVATE KEY" in reasons["key.pem"] and "keep private keys elsewhere" in reasons["key.pem"]
    assert "is not a CA" in reasons["leaf.pem"] and "pinned/" in reasons["leaf.pem"]
    assert "1024 bits" in reasons["weak.pem"]
    assert reasons["good.pem"] == "certificate CN=Store Root,O=certgate is already in the store as dup.pem"
    assert "not a PEM file" in reasons["binary.der"]
    assert "not a CA of this store" in reasons["orphan.crl"]
    assert "is a CA" in reasons["pinned/ca.pem"]
    assert "serverAuth" in reasons["pinned/server.pem"]
    assert "exactly one certificate" in reasons["pinned/two.pem"]
    assert "good.pem: certificate CN=Store Root" in str(err.value)


def test_missing_or_file_store(tmp_path: Path):
    """A missing store folder or a file in its place is a named error."""
    with pytest.raises(TrustStoreError, match="does not exist"):
        load_store(tmp_path / "nope", now=NOW)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrustStoreError, match="not a folder"):
        load_store(tmp_path / "file", now=NOW)


def test_expired_entries_load_with_warnings(tmp_path: Path):
    """Expired CAs and CRLs do not break loading (verification refuses them); they carry warnings."""
    old = I.ca("Old", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    (tmp_path / "old.pem").write_bytes(I.pem(old.cert))
    (tmp_path / "root.pem").write_bytes(I.pem(ROOT.cert))
    (tmp_path / "root.crl").write_bytes(I.pem(I.crl(ROOT, last_update=NOW - 10 * DAY, next_update=NOW - DAY)))
    g = load_store(tmp_path, now=NOW)
    warn = {e.file: e.warnings for e in g.entries}
    assert warn["old.pem"][0].startswith("expired on") and "nextUpdate passed" in warn["root.crl"][0]
    assert warn["root.pem"] == ()
    entry = g.ca_entry(ROOT.fingerprint)
    assert entry is not None and (entry.days_left(NOW) or 0) >= 3649


def test_changes_overlay_validates_without_writing(tmp_path: Path):
    """load_store(changes=...) validates a planned edit; the folder stays untouched."""
    (tmp_path / "root.pem").write_bytes(I.pem(ROOT.cert))
    before = folder_signature(tmp_path)
    g = load_store(tmp_path, now=NOW, changes={"inter.pem": I.pem(INTER.cert), "root.pem": None})
    assert [e.file for e in g.entries] == ["inter.pem"]
    with pytest.raises(TrustStoreError, match="bad.pem"):
        load_store(tmp_path, now=NOW, changes={"bad.pem": b"junk"})
    assert folder_signature(tmp_path) == before


def test_parse_objects_variants():
    """PEM with text around blocks, TRUSTED CERTIFICATE label, DER CRL; unknown blocks refused."""
    certs, crls = parse_objects(b"subject=...\n" + I.pem(ROOT.cert) + b"trailer\n")
    assert certs == [ROOT.cert] and crls == []
    trusted = I.pem(ROOT.cert).replace(b"BEGIN CERTIFICATE", b"BEGIN TRUSTED CERTIFICATE").replace(
        b"END CERTIFICATE", b"END TRUSTED CERTIFICATE")
    assert parse_objects(trusted)[0] == [ROOT.cert]
    assert len(parse_objects(I.der(I.crl(ROOT)))[1]) == 1
    with pytest.raises(ValueError, match="not a certificate or CRL"):
        parse_objects(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ValueError, match="BEGIN/END"):
        parse_objects(b"-----BEGIN CERTIFICATE-----\nAAAA\n")


def test_folder_signature_changes_on_every_kind_of_edit(tmp_path: Path):
    """Adding, rewriting (atomic replace), removing and pinning all change the signature."""
    sigs = [folder_signature(tmp_path)]
    atomic_write(tmp_path / "root.pem", I.pem(ROOT.cert))
    sigs.append(folder_signature(tmp_path))
    atomic_write(tmp_path / "root.pem", I.pem(ROOT.cert))  # same bytes, new inode
    sigs.append(folder_signature(tmp_path))
    apply_changes(tmp_path, {"pinned/a.pem": I.client(None, "a").cert_pem()})
    sigs.append(folder_signature(tmp_path))
    apply_changes(tmp_path, {"pinned/a.pem": None})
    sigs.append(folder_signature(tmp_path))
    with open(tmp_path / "root.pem", "ab") as fh:  # an edit in place
        fh.write(b"\n")
    sigs.append(folder_signature(tmp_path))
    assert len(set(sigs)) == len(sigs)
    assert folder_signature(tmp_path / "missing") == ((".", -1, -1, -1), ("pinned/", -1, -1, -1))


def test_atomic_write_leaves_no_temporary(tmp_path: Path):
    """atomic_write replaces the file in one rename and leaves no temporary behind."""
    target = tmp_path / "x.pem"
    target.write_bytes(b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["x.pem"]
    apply_changes(tmp_path, {"x.pem": None, "y.pem": b"y"})
    assert os.listdir(tmp_path) == ["y.pem"]


def test_trust_never_imports_twisted():
    """No module in trust/ imports Twisted (pure logic; the proxy consumes verdicts)."""
    folder = Path(__file__).resolve().parents[2] / "trust"
    offenders = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("twisted", "OpenSSL")]
    assert offenders == []
    assert len(list(folder.glob("*.py"))) >= 8


def test_delta_and_indirect_crls_refused(tmp_path: Path):
    """Only complete, direct CRLs are accepted: delta and indirect CRLs are named and refused."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    (tmp_path / "root.pem").write_bytes(I.pem(ROOT.cert))

    def crl_with(ext: x509.ExtensionType) -> bytes:
        b = (x509.CertificateRevocationListBuilder().issuer_name(ROOT.cert.subject)
             .last_update(NOW - DAY).next_update(NOW + DAY).add_extension(ext, critical=True))
        return I.pem(b.sign(ROOT.key, hashes.SHA256()))
    (tmp_path / "delta.crl").write_bytes(crl_with(x509.DeltaCRLIndicator(3)))
    (tmp_path / "indirect.crl").write_bytes(crl_with(x509.IssuingDistributionPoint(
        full_name=None, relative_name=None, only_contains_user_certs=False, only_contains_ca_certs=False,
        only_some_reasons=None, indirect_crl=True, only_contains_attribute_certs=False)))
    with pytest.raises(TrustStoreError) as err:
        load_store(tmp_path, now=NOW)
    reasons = {p.file: p.reason for p in err.value.problems}
    assert "delta CRLs are not supported" in reasons["delta.crl"]
    assert "indirect or partitioned" in reasons["indirect.crl"]


def test_importing_trust_loads_no_twisted_at_runtime():
    """Importing every trust module (transitively) leaves Twisted and pyOpenSSL unloaded."""
    import subprocess
    import sys
    code = ("import sys, trust, trust.cli, trust.verify, trust.store, trust.mapping, trust.access, "
            "trust.settings, trust.edits, trust.chain, trust.certinfo, trust.problems, trust.ocsp; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'OpenSSL')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_failed_reload_leaves_the_old_generation_intact(tmp_path: Path):
    """A broken edit raises; the generation the caller holds is unchanged and still complete."""
    (tmp_path / "root.pem").write_bytes(I.pem(ROOT.cert))
    old = load_store(tmp_path, now=NOW)
    (tmp_path / "inter.pem").write_bytes(I.pem(INTER.cert))
    (tmp_path / "broken.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TrustStoreError) as err:
        load_store(tmp_path, now=NOW)
    assert [p.file for p in err.value.problems] == ["broken.pem"]  # the good new file is not applied either
    assert [e.file for e in old.entries] == ["root.pem"] and old.ca_certs == (ROOT.cert,)
    with pytest.raises(AttributeError):
        old.digest = "x"  # type: ignore[misc]


def test_expiry_warnings_for_the_log(tmp_path: Path):
    """expiry_warnings lists entries expiring within the warning window, expired ones, stale CRLs."""
    from trust.store import expiry_warnings
    soon = I.ca("Soon", not_before=NOW - DAY, not_after=NOW + 12 * DAY + dt.timedelta(hours=1))
    old = I.ca("Old", not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    (tmp_path / "soon.pem").write_bytes(I.pem(soon.cert))
    (tmp_path / "old.pem").write_bytes(I.pem(old.cert))
    (tmp_path / "root.pem").write_bytes(I.pem(ROOT.cert))
    (tmp_path / "root.crl").write_bytes(I.pem(I.crl(ROOT, next_update=NOW + dt.timedelta(hours=5, minutes=1))))
    g = load_store(tmp_path, now=NOW)
    lines = expiry_warnings(g, NOW, 30)
    assert "soon.pem (CA CN=Soon,O=certgate): expires in 12 days" in lines
    assert any(x.startswith("old.pem (CA CN=Old,O=certgate): expired on") for x in lines)
    assert "root.crl (CRL CN=Store Root,O=certgate): CRL next update in 5 hours" in lines
    assert not any(x.startswith("root.pem") for x in lines)
    assert expiry_warnings(g, NOW, 5) == [x for x in lines if "expires in" not in x]
