"""trust.verify: the one verdict function (CERT-01..05, 11, 16 at this layer) and VerdictCache."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from trust import issue as I
from trust.store import load_store
from trust.presented import PresentedCertificate
from trust.verify import NO_CERTIFICATE, Verdict, VerdictCache, VerifyPolicy, verify

NOW = I.utcnow()
DAY = dt.timedelta(days=1)
POLICY = VerifyPolicy()


@pytest.fixture(scope="module")
def pki() -> dict[str, I.Issued]:
    """A root, an intermediate under it, and an Ed25519 root."""
    root = I.ca("Corp Root")
    inter = I.ca("Corp Issuing", issuer=root)
    return {"root": root, "inter": inter, "edroot": I.ca("Ed Root", key_type="ed25519")}


def make_store(folder: Path, cas=(), pinned=(), crls=()) -> Path:
    """Write a store folder: CA certs at the top, pinned certs in pinned/, CRLs as .crl."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, c in enumerate(cas):
        (folder / f"ca{n}.pem").write_bytes(I.pem(c.cert))
    if pinned:
        (folder / "pinned").mkdir(exist_ok=True)
    for n, c in enumerate(pinned):
        (folder / "pinned" / f"p{n}.pem").write_bytes(I.pem(c.cert))
    for n, crl in enumerate(crls):
        (folder / f"list{n}.crl").write_bytes(I.pem(crl))
    return folder


@pytest.fixture
def gen(tmp_path: Path, pki):
    """A generation trusting the root and the Ed25519 root (not the intermediate)."""
    return load_store(make_store(tmp_path / "s", cas=[pki["root"], pki["edroot"]]), now=NOW)


def check(leaf: I.Issued, generation, policy: VerifyPolicy = POLICY, now: dt.datetime = NOW,
          chain=None) -> Verdict:
    return verify(leaf.cert, leaf.chain if chain is None else chain, generation, policy, now=now)


def test_good_chain_is_accepted_with_chain_and_files(pki, gen):
    """A clientAuth leaf under intermediate -> root verifies, with chain, anchor and store file."""
    alice = I.client(pki["inter"], "alice")
    v = check(alice, gen)
    assert v.ok, v.summary
    assert v.reasons == ()
    assert [c.subject for c in v.chain] == [alice.cert.subject, pki["inter"].cert.subject, pki["root"].cert.subject]
    assert v.fingerprint == alice.fingerprint
    assert v.anchor_fingerprint == pki["root"].fingerprint
    assert v.store_files == ("ca0.pem",)
    assert v.subject == "CN=alice" and v.issuer == "CN=Corp Issuing,O=certgate"
    assert v.serial == alice.cert.serial_number and not v.pinned
    assert v.valid_until == alice.cert.not_valid_after_utc
    assert v.valid_until_ts == alice.cert.not_valid_after_utc.timestamp()
    assert v.summary.startswith("accepted: CN=alice")


def test_cn_only_smartcard_style_certificates_verify(pki, gen):
    """No SAN, critical EKU, no AKI/SKI: relaxed extension policy still accepts (1.6 notes)."""
    for leaf in (I.client(pki["inter"], "bob", eku_critical=True),
                 I.client(pki["inter"], "carol", ski_aki=False),
                 I.client(pki["inter"], "dave", key_type="rsa2048"),
                 I.client(pki["inter"], "erin", key_type="ec384"),
                 I.client(pki["inter"], "frank", key_type="ed25519"),
                 I.client(pki["inter"], "gina", emails=["gina@example.com"])):
        assert check(leaf, gen).ok, check(leaf, gen).summary


def test_ed25519_ca_is_supported(pki, gen):
    """The WebPKI profile forbids Ed25519 CA keys; the bounded Python path builder accepts them."""
    v = check(I.client(pki["edroot"], "ed-user"), gen)
    assert v.ok, v.summary
    assert v.store_files == ("ca1.pem",)
    rogue = I.ca("Ed Root", key_type="ed25519")
    v = check(I.client(rogue, "ed-user"), gen)
    assert not v.ok and v.codes == ("bad-signature",)


def test_no_certificate():
    """None means no certificate: a refusal with its own code."""
    assert NO_CERTIFICATE.codes == ("no-certificate",) and not NO_CERTIFICATE.ok


@pytest.mark.parametrize("when,code", [("expired", "expired"), ("future", "not-yet-valid")])
def test_cert01_leaf_dates(pki, gen, when, code):
    """CERT-01: an expired or not-yet-valid leaf is refused with the date in the message."""
    if when == "expired":
        leaf = I.client(pki["inter"], "old", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    else:
        leaf = I.client(pki["inter"], "new", not_before=NOW + DAY, not_after=NOW + 10 * DAY)
    v = check(leaf, gen)
    assert not v.ok and v.codes == (code,)
    assert v.chain == () and v.anchor_fingerprint is None
    if code == "not-yet-valid":
        assert v.valid_until == leaf.cert.not_valid_before_utc  # recompute when it becomes valid


def test_cert01_expired_intermediate_is_named(pki, gen):
    """CERT-01: an expired intermediate is reported as `expired`, naming the intermediate."""
    old = I.ca("Old Issuing", issuer=pki["root"], not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    v = check(I.client(old, "x"), gen)
    assert v.codes == ("expired",)
    assert "Old Issuing" in v.reasons[0].message


def test_verdict_expires_when_certificate_expires(pki, gen):
    """A verdict computed after the leaf's notAfter refuses (the gateway re-verifies at valid_until)."""
    leaf = I.client(pki["inter"], "short", not_before=NOW - DAY, not_after=NOW + dt.timedelta(hours=1))
    v = check(leaf, gen)
    assert v.ok and v.valid_until == leaf.cert.not_valid_after_utc
    later = check(leaf, gen, now=v.valid_until + dt.timedelta(seconds=1))
    assert later.codes == ("expired",)


def test_cert02_unknown_ca(pki, gen):
    """CERT-02: a CA not in the store -> unknown-ca; the missing intermediate is named."""
    other = I.ca("Other Root")
    assert check(I.client(other, "x"), gen).codes == ("unknown-ca",)
    v = check(I.client(pki["inter"], "y"), gen, chain=[])  # intermediate not sent
    assert v.codes == ("unknown-ca",) and "Corp Issuing" in v.reasons[0].message


def test_cert02_rogue_ca_with_same_name(pki, gen):
    """CERT-02: a rogue CA with the trusted CA's exact DN is refused (signature, never the name)."""
    rogue = I.ca("Corp Root")
    assert rogue.cert.subject == pki["root"].cert.subject
    v = check(I.client(rogue, "alice"), gen)
    assert not v.ok and v.codes == ("bad-signature",)
    rogue_inter = I.ca("Corp Issuing", issuer=rogue)
    v = check(I.client(rogue_inter, "alice"), gen)
    assert not v.ok and v.codes == ("bad-signature",)


def test_cert02_self_signed_leaf_not_pinned(gen):
    """CERT-02: a self-signed client certificate that is not pinned is refused."""
    v = check(I.client(None, "selfie"), gen)
    assert not v.ok and v.codes == ("unknown-ca",)


def test_cert03_server_auth_only_and_any_eku(pki, gen):
    """CERT-03: EKU serverAuth only (or anyExtendedKeyUsage only) -> wrong-usage."""
    assert check(I.server(pki["inter"]), gen).codes == ("wrong-usage",)
    anyeku = I.client(pki["inter"], "any", eku=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,))
    assert check(anyeku, gen).codes == ("wrong-usage",)
    # unsafe_allow_missing_eku never admits serverAuth-only
    assert check(I.server(pki["inter"]), gen, VerifyPolicy(unsafe_allow_missing_eku=True)).codes == ("wrong-usage",)


def test_cert03_missing_eku(pki, gen):
    """CERT-03: no EKU is refused by default, accepted (with a warning) only with the unsafe key."""
    leaf = I.client(pki["inter"], "noeku", eku=None)
    assert check(leaf, gen).codes == ("no-client-usage",)
    v = check(leaf, gen, VerifyPolicy(unsafe_allow_missing_eku=True))
    assert v.ok and [w.code for w in v.warnings] == ["no-client-usage"]


def test_key_usage_without_digital_signature_is_wrong_usage(pki, gen, monkeypatch):
    """KeyUsage present without digitalSignature cannot sign the handshake."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    key = I.new_key()
    cert = (x509.CertificateBuilder().subject_name(I.name("ku")).issuer_name(pki["root"].cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(pki["root"].key, hashes.SHA256()))
    v = verify(cert, [], gen, POLICY, now=NOW)
    assert v.codes == ("wrong-usage",) and "digitalSignature" in v.reasons[0].message


def test_cert04_ca_leaf_and_leaf_as_issuer(pki, gen):
    """CERT-04: a CA:TRUE leaf -> ca-leaf; a non-CA used as issuer -> issuer-not-ca."""
    ca_leaf = I.issue(I.name("caleaf"), issuer=pki["inter"], ca=True,
                      eku=(ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH))
    assert "ca-leaf" in check(ca_leaf, gen).codes
    middle = I.client(pki["root"], "middle")
    v = check(I.client(middle, "victim"), gen, chain=[middle.cert])
    assert v.codes == ("issuer-not-ca",) and "middle" in v.reasons[0].message


def test_cert05_chain_depth(pki, gen):
    """CERT-05: max_depth counts certificates above the leaf, anchor included."""
    chain = [pki["inter"]]
    for n in range(3):
        chain.append(I.ca(f"Level {n}", issuer=chain[-1]))
    leaf = I.client(chain[-1], "deep")  # above the leaf: L2, L1, L0, inter, root = 5
    assert check(leaf, gen).codes == ("chain-too-deep",)
    assert check(leaf, gen, VerifyPolicy(max_depth=5)).ok
    assert check(I.client(pki["root"], "direct"), gen, VerifyPolicy(max_depth=1)).ok
    assert check(I.client(pki["inter"], "two"), gen, VerifyPolicy(max_depth=1)).codes == ("chain-too-deep",)


def test_cert05_too_many_certificates_sent(pki, gen):
    """A client sending a pile of certificates is refused before path building."""
    junk = [I.ca(f"junk {n}").cert for n in range(17)]
    v = check(I.client(pki["inter"], "x"), gen, chain=[pki["inter"].cert, *junk])
    assert v.codes == ("chain-too-deep",)


def test_weak_and_unsupported_keys(pki, gen):
    """RSA below the minimum -> weak-key (leaf and CA); P-521 -> unsupported-key."""
    assert check(I.client(pki["inter"], "weak", key_type="rsa1024"), gen).codes == ("weak-key",)
    rsa = I.client(pki["inter"], "rsa", key_type="rsa2048")
    assert check(rsa, gen, VerifyPolicy(min_rsa_bits=3072)).codes == ("weak-key",)
    from cryptography.hazmat.primitives.asymmetric import ec
    p521 = I.client(pki["inter"], "p521", key=ec.generate_private_key(ec.SECP521R1()))
    assert check(p521, gen).codes == ("unsupported-key",)


def test_weak_ca_key_against_stricter_policy(tmp_path: Path):
    """An RSA-2048 CA is refused when the policy asks for 3072 bits."""
    root = I.ca("RSA Root", key_type="rsa2048")
    g = load_store(make_store(tmp_path / "s", cas=[root]), now=NOW)
    leaf = I.client(root, "x")
    assert check(leaf, g).ok
    v = check(leaf, g, VerifyPolicy(min_rsa_bits=3072))
    assert v.codes == ("weak-key",) and "RSA Root" in v.reasons[0].message


def test_all_reasons_are_reported_together(pki, gen):
    """Several leaf problems are reported at once, not just the first."""
    leaf = I.client(pki["inter"], "bad", key_type="rsa1024", eku=(ExtendedKeyUsageOID.SERVER_AUTH,),
                    not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    assert set(check(leaf, gen).codes) == {"expired", "weak-key", "wrong-usage"}


# --------------------------------------------------------------------------- CRLs (CERT-11)


@pytest.fixture
def crl_store(tmp_path: Path, pki):
    """Store with root + intermediate and a builder for generations with given CRLs."""
    def build(*crls):
        folder = tmp_path / f"crl{len(list(tmp_path.iterdir()))}"
        return load_store(make_store(folder, cas=[pki["root"], pki["inter"]], crls=crls), now=NOW)
    return build


def test_cert11_revoked_leaf_refused_in_hard_and_soft(pki, crl_store):
    """CERT-11: a serial listed in the issuer's CRL is refused (hard and soft), ignored when off."""
    leaf = I.client(pki["inter"], "revoked")
    g = crl_store(I.crl(pki["inter"], [leaf.cert.serial_number, 12345]))
    assert check(leaf, g).codes == ("revoked",)
    assert check(leaf, g, VerifyPolicy(crl="soft")).codes == ("revoked",)
    assert check(leaf, g, VerifyPolicy(crl="off")).ok
    other = check(I.client(pki["inter"], "fine"), g)
    assert other.ok
    assert other.valid_until == g.crls[0].not_after  # recompute at the CRL's nextUpdate


def test_cert11_revoked_intermediate(pki, tmp_path):
    """A CRL of the root revoking the intermediate refuses everything under it."""
    crl = I.crl(pki["root"], [pki["inter"].cert.serial_number])
    g = load_store(make_store(tmp_path / "s", cas=[pki["root"]], crls=[crl]), now=NOW)
    v = check(I.client(pki["inter"], "x"), g)
    assert v.codes == ("revoked",) and "Corp Issuing" in v.reasons[0].message


def test_cert11_expired_crl(pki, crl_store):
    """CERT-11: an expired CRL refuses under hard, warns under soft, is ignored when off."""
    crl = I.crl(pki["inter"], [], last_update=NOW - 10 * DAY, next_update=NOW - DAY)
    g = crl_store(crl)
    leaf = I.client(pki["inter"], "x")
    assert check(leaf, g).codes == ("crl-expired",)
    soft = check(leaf, g, VerifyPolicy(crl="soft"))
    assert soft.ok and [w.code for w in soft.warnings] == ["crl-expired"]
    assert check(leaf, g, VerifyPolicy(crl="off")).ok


def test_cert11_newest_crl_counts(pki, crl_store):
    """With an expired and a current CRL of the same CA, the current one keeps hard mode happy."""
    old = I.crl(pki["inter"], [], last_update=NOW - 10 * DAY, next_update=NOW - DAY)
    new = I.crl(pki["inter"], [])
    assert check(I.client(pki["inter"], "x"), crl_store(old, new)).ok


def test_cert11_crl_signed_by_wrong_key_is_rejected_at_load(pki, tmp_path):
    """CERT-11: a CRL naming the CA but signed by another key makes the store fail to load."""
    from trust.store import TrustStoreError
    forged = I.crl(pki["inter"], [], signer=I.ca("Corp Issuing"))
    with pytest.raises(TrustStoreError) as err:
        load_store(make_store(tmp_path / "s", cas=[pki["root"], pki["inter"]], crls=[forged]), now=NOW)
    assert err.value.problems[0].file == "list0.crl"
    assert "signed by another key" in err.value.problems[0].reason


# --------------------------------------------------------------------------- pinned (2.1.3, CERT-16)


def test_pinned_self_signed_accepted_on_exact_match(tmp_path, pki):
    """A pinned self-signed client cert is accepted; a same-CN cert with another key is not (CERT-16)."""
    selfie = I.client(None, "selfie")
    g = load_store(make_store(tmp_path / "s", cas=[pki["root"]], pinned=[selfie]), now=NOW)
    v = check(selfie, g)
    assert v.ok and v.pinned and v.chain == (selfie.cert,) and v.store_files == ("pinned/p0.pem",)
    assert v.anchor_fingerprint == selfie.fingerprint
    twin = I.client(None, "selfie")  # same CN, same DN, different key
    assert twin.cert.subject == selfie.cert.subject
    v2 = check(twin, g)
    assert not v2.ok and not v2.pinned and v2.fingerprint != v.fingerprint


def test_pinned_cert_issued_by_untrusted_ca(tmp_path, pki):
    """A pinned certificate from an untrusted CA is accepted only for its exact fingerprint."""
    foreign = I.ca("Foreign")
    pinned = I.client(foreign, "partner")
    g = load_store(make_store(tmp_path / "s", cas=[pki["root"]], pinned=[pinned]), now=NOW)
    assert check(pinned, g).ok
    assert check(I.client(foreign, "partner"), g).codes == ("unknown-ca",)


def test_pinned_expired_and_usage(tmp_path):
    """Pinned certs must be inside their dates and carry a client usage."""
    old = I.client(None, "old", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    noeku = I.client(None, "noeku", eku=None)
    g = load_store(make_store(tmp_path / "s", pinned=[old, noeku]), now=NOW)
    assert check(old, g).codes == ("pinned-expired",)
    assert check(noeku, g).codes == ("no-client-usage",)
    assert check(noeku, g, VerifyPolicy(unsafe_allow_missing_eku=True)).ok


def test_pinned_cert_still_subject_to_its_ca_crl(tmp_path, pki):
    """A pinned cert issued by a store CA is refused once that CA's CRL revokes it."""
    leaf = I.client(pki["root"], "pinned-and-revoked")
    crl = I.crl(pki["root"], [leaf.cert.serial_number])
    g = load_store(make_store(tmp_path / "s", cas=[pki["root"]], pinned=[leaf], crls=[crl]), now=NOW)
    assert check(leaf, g).codes == ("revoked",)


def test_empty_store_refuses_everything(tmp_path, pki):
    """No CA and no pin: every certificate is unknown-ca."""
    g = load_store(make_store(tmp_path / "s"), now=NOW)
    assert check(I.client(pki["root"], "x"), g).codes == ("unknown-ca",)


def test_intermediate_as_anchor(tmp_path, pki):
    """An intermediate in the store is a trust anchor on its own (its root need not be trusted)."""
    g = load_store(make_store(tmp_path / "s", cas=[pki["inter"]]), now=NOW)
    v = check(I.client(pki["inter"], "x"), g, chain=[])
    assert v.ok and v.anchor_fingerprint == pki["inter"].fingerprint
    assert check(I.client(pki["root"], "y"), g).codes == ("unknown-ca",)


# --------------------------------------------------------------------------- cache


def _der(c) -> bytes:
    return I.der(c)


def P(leaf_der: bytes, chain_ders: list[bytes]) -> PresentedCertificate:  # noqa: N802
    """The presented certificate the verdict cache is asked about."""
    return PresentedCertificate(leaf_der, tuple(chain_ders))


def test_cache_hit_returns_same_verdict(pki, gen):
    """A second lookup is a hit returning the very same verdict object."""
    cache = VerdictCache()
    leaf = I.client(pki["inter"], "alice")
    v1 = cache.get_or_verify(P(_der(leaf.cert), [_der(pki["inter"].cert)]), gen, POLICY, NOW.timestamp())
    v2 = cache.get_or_verify(P(_der(leaf.cert), [_der(pki["inter"].cert)]), gen, POLICY, NOW.timestamp() + 5)
    assert v1.ok and v2 is v1
    assert (cache.hits, cache.misses) == (1, 1)
    # another chain, another policy: separate entries
    cache.get_or_verify(P(_der(leaf.cert), []), gen, POLICY, NOW.timestamp())
    cache.get_or_verify(P(_der(leaf.cert), [_der(pki["inter"].cert)]), gen, VerifyPolicy(crl="off"),
                        NOW.timestamp())
    assert cache.misses == 3 and len(cache) == 3


def test_cache_reverifies_after_valid_until(pki, gen):
    """Past valid_until the verdict is recomputed (here: the leaf expired)."""
    cache = VerdictCache()
    leaf = I.client(pki["inter"], "short", not_before=NOW - DAY, not_after=NOW + dt.timedelta(minutes=10))
    args = (P(_der(leaf.cert), [_der(pki["inter"].cert)]), gen, POLICY)
    assert cache.get_or_verify(*args, NOW.timestamp()).ok
    t = leaf.cert.not_valid_after_utc.timestamp()
    assert cache.get_or_verify(*args, t - 1).ok and cache.hits == 1
    late = cache.get_or_verify(*args, t + 1)
    assert late.codes == ("expired",) and cache.misses == 2


def test_cache_cleared_on_generation_change(tmp_path, pki, gen):
    """A new generation (other digest) empties the cache: removal of a CA takes effect."""
    cache = VerdictCache()
    leaf = I.client(pki["inter"], "alice")
    args = (P(_der(leaf.cert), [_der(pki["inter"].cert)]),)
    assert cache.get_or_verify(*args, gen, POLICY, NOW.timestamp()).ok
    without_root = load_store(make_store(tmp_path / "other", cas=[pki["edroot"]]), now=NOW)
    assert without_root.digest != gen.digest
    v = cache.get_or_verify(*args, without_root, POLICY, NOW.timestamp())
    assert v.codes == ("unknown-ca",) and len(cache) == 1


def test_cache_eviction_and_garbage(pki, gen):
    """The cache stays bounded; garbage DER gives a `malformed` refusal; empty means no cert."""
    cache = VerdictCache(maxsize=2)
    leaves = [I.client(pki["root"], f"u{n}") for n in range(3)]
    for leaf in leaves:
        cache.get_or_verify(P(_der(leaf.cert), []), gen, POLICY, NOW.timestamp())
    assert len(cache) == 2
    assert cache.get_or_verify(P(b"\x30\x03garbage", []), gen, POLICY, NOW.timestamp()).codes == ("malformed",)
    assert cache.get_or_verify(P(b"", []), gen, POLICY, NOW.timestamp()) is NO_CERTIFICATE


def test_policy_ranges_are_enforced():
    """VerifyPolicy refuses out-of-range values (settings report them as problems first)."""
    for bad in (dict(max_depth=0), dict(max_depth=17), dict(min_rsa_bits=1024), dict(crl="sometimes")):
        with pytest.raises(ValueError):
            VerifyPolicy(**bad)  # type: ignore[arg-type]


def test_unknown_critical_extension_refused(pki, gen):
    """A leaf with a critical extension nobody understands is refused (chain-invalid, verifier text)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    key = I.new_key()
    cert = (x509.CertificateBuilder().subject_name(I.name("crit")).issuer_name(pki["root"].cert.subject)
            .public_key(key.public_key()).serial_number(5).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
                           critical=True)
            .sign(pki["root"].key, hashes.SHA256()))
    v = verify(cert, [], gen, POLICY, now=NOW)
    assert v.codes == ("chain-invalid",) and "unaccounted-for critical" in v.reasons[0].message


def test_cert16_same_cn_other_key_has_another_fingerprint(pki, gen):
    """CERT-16: two valid certificates with the same CN differ by fingerprint (what sessions bind to)."""
    a = check(I.client(pki["inter"], "alice"), gen)
    b = check(I.client(pki["inter"], "alice"), gen)
    assert a.ok and b.ok and a.subject == b.subject and a.fingerprint != b.fingerprint


def test_legacy_ca_without_key_usage_or_key_ids(tmp_path):
    """Enterprise CAs without KeyUsage or SKI/AKI verify; a CA KeyUsage without keyCertSign does not."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    legacy = I.ca("Legacy Root", key_usage=False, ski_aki=False)
    inter = I.ca("Legacy Issuing", issuer=legacy, key_usage=False)
    key = I.new_key()
    no_sign = (x509.CertificateBuilder().subject_name(I.name("No Sign")).issuer_name(I.name("No Sign"))
               .public_key(key.public_key()).serial_number(1).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, True, False, False), critical=True)
               .sign(key, hashes.SHA256()))
    no_sign_ca = I.Issued(no_sign, key)
    g = load_store(make_store(tmp_path / "s", cas=[legacy, no_sign_ca]), now=NOW)
    assert check(I.client(inter, "x"), g).ok
    v = check(I.client(no_sign_ca, "y"), g)
    assert v.codes == ("issuer-not-ca",) and "keyCertSign" in v.reasons[0].message


def test_leaf_repeated_in_chain_is_harmless(pki, gen):
    """A chain that repeats the leaf (as some TLS stacks report it) gives the same verdicts."""
    alice = I.client(pki["inter"], "alice")
    assert check(alice, gen, chain=[alice.cert, pki["inter"].cert]).ok
    selfie = I.client(None, "selfie")
    assert check(selfie, gen, chain=[selfie.cert]).codes == ("unknown-ca",)


def test_cert05_many_same_name_issuers_are_bounded(pki, gen):
    """Many intermediates sharing one name: the right one is found by signature, a forged one fails fast."""
    from trust.chain import build_path
    mesh = [I.ca("Mesh", issuer=pki["root"]) for _ in range(12)]
    sent = [m.cert for m in mesh]
    v = check(I.client(mesh[7], "x"), gen, chain=sent)
    assert v.ok and v.chain[1] == mesh[7].cert
    stranger = I.ca("Mesh", issuer=I.ca("Corp Root"))
    v = check(I.client(stranger, "y"), gen, chain=sent[:-1] + [stranger.cert])
    assert not v.ok and v.codes == ("bad-signature",)
    leaf = I.client(stranger, "z").cert
    path, failure = build_path(leaf, sent, [pki["root"].cert], now=NOW, max_depth=4, min_rsa_bits=2048, budget=5)
    assert path is None and failure is not None and failure.code in ("bad-signature", "chain-invalid")
    _, exhausted = build_path(leaf, sent, [pki["root"].cert], now=NOW, max_depth=4, min_rsa_bits=2048, budget=0)
    assert exhausted is not None and "too many signature checks" in exhausted.message
