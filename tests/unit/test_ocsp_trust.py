"""trust.ocsp: response validation, cache policy, decision and settings, with a fixed clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from tests.harness.ocsp import flip_signature, make_response
from trust import issue as I
from trust import ocsp as O
from trust.settings import parse_ocsp_sections, parse_trust_section
from trust.store import load_store
from trust.verify import VerifyPolicy, verify

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
MIN = dt.timedelta(minutes=1)
NONCE = b"0123456789abcdef"


@pytest.fixture(scope="module")
def pki() -> dict[str, I.Issued]:
    ca = I.ca("OCSP unit CA", not_before=NOW - dt.timedelta(days=10), days=3650)
    other = I.ca("Other CA", not_before=NOW - dt.timedelta(days=10), days=3650)
    leaf = I.client(ca, "alice", not_before=NOW - dt.timedelta(days=1), days=30,
                    ocsp_urls=("http://ocsp.example.test/",))
    return {"ca": ca, "other": other, "leaf": leaf,
            "delegate": I.issue(I.name("resp"), issuer=ca, eku=(x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING,),
                                not_before=NOW - dt.timedelta(days=1), days=30),
            "no_eku": I.issue(I.name("resp"), issuer=ca, not_before=NOW - dt.timedelta(days=1), days=30),
            "foreign": I.issue(I.name("resp"), issuer=other, eku=(x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING,),
                               not_before=NOW - dt.timedelta(days=1), days=30)}


def _check(pki: dict[str, I.Issued], der: bytes, nonce: bytes | None = NONCE, now: dt.datetime = NOW,
           max_age: float = 3600) -> O.OcspResult:
    return O.validate(der, pki["leaf"].cert, pki["ca"].cert, nonce=nonce, now=now, clock_skew=300, max_age=max_age)


def _resp(pki: dict[str, I.Issued], signer: str = "ca", **kw: object) -> bytes:
    kw.setdefault("this_update", NOW - MIN)
    kw.setdefault("next_update", NOW + 60 * MIN)
    kw.setdefault("nonce", NONCE)
    return make_response(pki["leaf"].cert, pki["ca"].cert, pki[signer], **kw)  # type: ignore[arg-type]


def test_good_revoked_unknown(pki: dict[str, I.Issued]) -> None:
    good = _check(pki, _resp(pki))
    assert good.code == "good" and not good.is_error
    assert good.expires == (NOW + 59 * MIN).timestamp() or good.expires == (NOW + 60 * MIN).timestamp()
    revoked = _check(pki, _resp(pki, status=ocsp.OCSPCertStatus.REVOKED))
    assert revoked.code == "revoked" and "key_compromise" in revoked.message
    unknown = _check(pki, _resp(pki, status=ocsp.OCSPCertStatus.UNKNOWN))
    assert unknown.code == "unknown"


def test_delegated_responder_rules(pki: dict[str, I.Issued]) -> None:
    assert _check(pki, _resp(pki, "delegate", include_signer=True)).code == "good"
    assert _check(pki, _resp(pki, "delegate", include_signer=True, by_key_hash=True)).code == "good"
    # not included in the response: nothing to verify against
    assert _check(pki, _resp(pki, "delegate")).code == "ocsp-unauthorized-responder"
    r = _check(pki, _resp(pki, "no_eku", include_signer=True))
    assert r.code == "ocsp-unauthorized-responder" and "OCSP-signing" in r.message
    r = _check(pki, _resp(pki, "foreign", include_signer=True))
    assert r.code == "ocsp-unauthorized-responder" and "not issued by" in r.message
    # the delegate outside its dates
    late = NOW + dt.timedelta(days=40)
    r = _check(pki, _resp(pki, "delegate", include_signer=True, this_update=late - MIN, next_update=late + MIN),
               now=late)
    assert r.code == "ocsp-unauthorized-responder" and "validity" in r.message


def test_bad_signature_and_impostor(pki: dict[str, I.Issued]) -> None:
    assert _check(pki, flip_signature(_resp(pki))).code == "ocsp-bad-signature"
    impostor = I.ca("OCSP unit CA", not_before=NOW - dt.timedelta(days=10))  # same name, other key
    der = make_response(pki["leaf"].cert, pki["ca"].cert, impostor, this_update=NOW - MIN,
                        next_update=NOW + MIN, nonce=NONCE)
    assert _check(pki, der).code == "ocsp-bad-signature"


def test_freshness_with_skew(pki: dict[str, I.Issued]) -> None:
    stale = _resp(pki, this_update=NOW - 120 * MIN, next_update=NOW - 6 * MIN)
    r = _check(pki, stale)
    assert r.code == "ocsp-stale" and "replayed" in r.message
    # within the 5 minute skew allowance
    assert _check(pki, _resp(pki, this_update=NOW - 120 * MIN, next_update=NOW - 4 * MIN)).code == "good"
    assert _check(pki, _resp(pki, this_update=NOW + 4 * MIN)).code == "good"
    assert _check(pki, _resp(pki, this_update=NOW + 6 * MIN)).code == "ocsp-not-yet-valid"
    # without nextUpdate: thisUpdate + max_age
    assert _check(pki, _resp(pki, this_update=NOW - 30 * MIN, next_update=None), max_age=3600).code == "good"
    r = _check(pki, _resp(pki, this_update=NOW - 70 * MIN, next_update=None), max_age=3600)
    assert r.code == "ocsp-stale" and "no nextUpdate" in r.message


def test_nonce(pki: dict[str, I.Issued]) -> None:
    assert _check(pki, _resp(pki, nonce=None)).code == "ocsp-nonce-mismatch"
    r = _check(pki, _resp(pki, nonce=b"another-request!"))
    assert r.code == "ocsp-nonce-mismatch" and "another request" in r.message
    assert _check(pki, _resp(pki, nonce=None), nonce=None).code == "good"  # nonce = no


def test_certificate_id_must_match(pki: dict[str, I.Issued]) -> None:
    other_leaf = I.client(pki["ca"], "bob", not_before=NOW - dt.timedelta(days=1), days=30)
    der = make_response(other_leaf.cert, pki["ca"].cert, pki["ca"], this_update=NOW - MIN,
                        next_update=NOW + MIN, nonce=NONCE)
    assert _check(pki, der).code == "ocsp-wrong-certificate"


def test_malformed_and_error_status(pki: dict[str, I.Issued]) -> None:
    assert _check(pki, b"not der").code == "ocsp-malformed"
    assert _check(pki, b"\x30" * (O.MAX_RESPONSE_BYTES + 1)).code == "ocsp-malformed"
    from cryptography.hazmat.primitives.serialization import Encoding

    der = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(Encoding.DER)
    r = _check(pki, der)
    assert r.code == "ocsp-error-status" and "try_later" in r.message


def test_request_carries_nonce_and_cert_id(pki: dict[str, I.Issued]) -> None:
    req = ocsp.load_der_ocsp_request(O.build_request(pki["leaf"].cert, pki["ca"].cert, NONCE))
    assert req.serial_number == pki["leaf"].cert.serial_number
    assert req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == NONCE
    bare = ocsp.load_der_ocsp_request(O.build_request(pki["leaf"].cert, pki["ca"].cert, None))
    assert len(bare.extensions) == 0


def test_decide_modes() -> None:
    good = O.OcspResult("good", "ok")
    revoked = O.OcspResult("revoked", "OCSP: revoked")
    unknown = O.OcspResult("unknown", "OCSP: unknown")
    down = O.OcspResult("ocsp-timeout", "no answer")
    assert O.decide("hard", good) == ((), ())
    for mode in ("hard", "soft"):
        reasons, warnings = O.decide(mode, revoked)  # type: ignore[arg-type]
        assert [r.code for r in reasons] == ["ocsp-revoked"] and not warnings
    assert [r.code for r in O.decide("hard", unknown)[0]] == ["ocsp-unknown"]
    assert [r.code for r in O.decide("hard", down)[0]] == ["ocsp-timeout"]
    reasons, warnings = O.decide("soft", down)
    assert not reasons and warnings[0].code == "ocsp-timeout" and "ocsp = soft" in warnings[0].message
    assert O.decide("soft", unknown)[1][0].code == "ocsp-unknown"


def test_cache_honours_expiry_and_bound() -> None:
    cache = O.OcspCache(maxsize=2)
    t = NOW.timestamp()
    good = O.OcspResult("good", "ok", expires=t + 60)
    assert cache.put(("a", "ca"), good, t)
    assert cache.get(("a", "ca"), t + 59) is good
    assert cache.get(("a", "ca"), t + 60) is None and len(cache) == 0
    assert not cache.put(("e", "ca"), O.OcspResult("ocsp-timeout", "x", expires=t + 60), t)  # errors never
    assert not cache.put(("x", "ca"), O.OcspResult("good", "ok", expires=t), t)  # already expired
    for k in ("a", "b", "c"):
        cache.put((k, "ca"), good, t)
    assert len(cache) == 2 and cache.get(("a", "ca"), t) is None and cache.get(("c", "ca"), t) is good


def test_expiry_capped_by_max_age(pki: dict[str, I.Issued]) -> None:
    r = _check(pki, _resp(pki, next_update=NOW + dt.timedelta(days=7)), max_age=600)
    assert r.code == "good" and r.expires == (NOW + dt.timedelta(seconds=600)).timestamp()


def test_plan_rules_and_aia(tmp_path: Path, pki: dict[str, I.Issued]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "unit-ca.pem").write_bytes(pki["ca"].cert_pem())
    gen = load_store(store, now=NOW)
    v = verify(pki["leaf"].cert, [], gen, VerifyPolicy(), now=NOW)
    assert v.ok
    assert O.plan_for(v, gen, O.OcspSettings()) is None  # default off
    plan = O.plan_for(v, gen, O.OcspSettings(mode="soft"))
    assert plan is not None and plan.mode == "soft" and plan.url == "http://ocsp.example.test/"
    assert plan.rule == "trust" and plan.nonce and plan.issuer == pki["ca"].cert
    rule = O.OcspRule("corp", ("unit-ca.pem",), mode="hard", responder="http://127.0.0.1:1/", nonce=False)
    plan = O.plan_for(v, gen, O.OcspSettings(mode="off", rules=(rule,)))
    assert plan is not None and (plan.mode, plan.url, plan.nonce, plan.rule) == ("hard", "http://127.0.0.1:1/",
                                                                                   False, "corp")
    by_fp = O.OcspRule("fp", (pki["ca"].fingerprint,), mode="off")
    assert O.plan_for(v, gen, O.OcspSettings(mode="hard", rules=(by_fp,))) is None
    no_aia = I.client(pki["ca"], "carol", not_before=NOW - dt.timedelta(days=1), days=30)
    v2 = verify(no_aia.cert, [], gen, VerifyPolicy(), now=NOW)
    plan = O.plan_for(v2, gen, O.OcspSettings(mode="hard"))
    assert plan is not None and plan.url is None and O.no_responder(plan).code == "ocsp-no-responder"
    refused = verify(I.client(pki["other"], "eve").cert, [], gen, VerifyPolicy(), now=NOW)
    assert O.plan_for(refused, gen, O.OcspSettings(mode="hard")) is None


def test_apply_turns_verdict_into_refusal(tmp_path: Path, pki: dict[str, I.Issued]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "unit-ca.pem").write_bytes(pki["ca"].cert_pem())
    v = verify(pki["leaf"].cert, [], load_store(store, now=NOW), VerifyPolicy(), now=NOW)
    refused = O.apply(v, *O.decide("hard", O.OcspResult("revoked", "OCSP: alice is revoked")))
    assert not refused.ok and refused.codes == ("ocsp-revoked",) and refused.chain == ()
    assert "ocsp-revoked: OCSP: alice is revoked" in refused.summary
    warned = O.apply(v, *O.decide("soft", O.OcspResult("ocsp-timeout", "slow")))
    assert warned.ok and warned.warnings[-1].code == "ocsp-timeout" and "warning" in warned.summary


def test_settings_parse(tmp_path: Path) -> None:
    s, problems = parse_trust_section({"store": "t", "ocsp": "soft", "ocsp_timeout": "1.5", "ocsp_nonce": "no",
                                       "ocsp_cache_size": "5", "ocsp_clock_skew": "60", "ocsp_max_age": "900"},
                                      tmp_path)
    assert not problems
    assert (s.ocsp.mode, s.ocsp.timeout, s.ocsp.nonce, s.ocsp.cache_size, s.ocsp.clock_skew, s.ocsp.max_age) == (
        "soft", 1.5, False, 5, 60.0, 900.0)
    assert parse_trust_section({"store": "t"}, tmp_path)[0].ocsp.mode == "off"
    _, problems = parse_trust_section({"store": "t", "ocsp": "maybe", "ocsp_timeout": "0"}, tmp_path)
    assert [str(p) for p in problems] == ["[trust] ocsp: 'maybe' is not one of hard, soft, off",
                                         "[trust] ocsp_timeout: 0 is outside the range 0.1..60"]
    rules, problems = parse_ocsp_sections({"corp": {"cas": "corp.pem", "responder": "http://ocsp.corp/"}})
    assert not problems and rules[0] == O.OcspRule("corp", ("corp.pem",), "hard", "http://ocsp.corp/", True)
    rules, problems = parse_ocsp_sections({"a": {"cas": "x.pem", "mode": "sometimes", "responder": "ldap://x",
                                                 "nonce": "perhaps", "colour": "red"},
                                           "b": {"cas": "x.pem"}, "c": {}}, default_nonce=False)
    texts = [str(p) for p in problems]
    assert "[ocsp:a] colour: unknown key (known: cas, mode, responder, nonce)" in texts
    assert "[ocsp:a] mode: 'sometimes' is not one of hard, soft, off" in texts
    assert "[ocsp:a] responder: 'ldap://x' must be an http:// or https:// URL with a host" in texts
    assert any(t.startswith("[ocsp:a] nonce: 'perhaps' is not a boolean") for t in texts)
    assert "[ocsp:b] cas: 'x.pem' is already named by [ocsp:a]" in texts
    assert "[ocsp:c] cas: required: the CA(s) this rule applies to" in texts


def test_crl_and_ocsp_together(tmp_path: Path, pki: dict[str, I.Issued]) -> None:
    """A serial in the store's CRL is refused before OCSP is asked; others get an OCSP plan."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "unit-ca.pem").write_bytes(pki["ca"].cert_pem())
    listed = I.client(pki["ca"], "carl", not_before=NOW - dt.timedelta(days=1), days=30, ocsp_urls=("http://o/",))
    crl = I.crl(pki["ca"], [listed.cert.serial_number], last_update=NOW - dt.timedelta(hours=1))
    (store / "unit-ca.crl").write_bytes(I.pem(crl))
    gen = load_store(store, now=NOW)
    settings = O.OcspSettings(mode="hard")
    v = verify(listed.cert, [], gen, VerifyPolicy(crl="hard"), now=NOW)
    assert v.codes == ("revoked",) and O.plan_for(v, gen, settings) is None
    v = verify(pki["leaf"].cert, [], gen, VerifyPolicy(crl="hard"), now=NOW)
    assert v.ok and O.plan_for(v, gen, settings) is not None


def test_pinned_certificate_is_checked_when_its_issuer_is_a_store_ca(tmp_path: Path, pki: dict[str, I.Issued]
                                                                     ) -> None:
    store = tmp_path / "store"
    (store / "pinned").mkdir(parents=True)
    (store / "pinned" / "alice.pem").write_bytes(pki["leaf"].cert_pem())
    gen = load_store(store, now=NOW)
    v = verify(pki["leaf"].cert, [], gen, VerifyPolicy(), now=NOW)
    assert v.ok and v.pinned
    assert O.plan_for(v, gen, O.OcspSettings(mode="hard")) is None  # issuer not in the store: nothing to ask with
    (store / "unit-ca.pem").write_bytes(pki["ca"].cert_pem())
    gen = load_store(store, now=NOW)
    v = verify(pki["leaf"].cert, [], gen, VerifyPolicy(), now=NOW)
    rule = O.OcspRule("ca", ("unit-ca.pem",), mode="soft")
    plan = O.plan_for(v, gen, O.OcspSettings(rules=(rule,)))
    assert v.ok and v.pinned and plan is not None and plan.issuer == pki["ca"].cert and plan.rule == "ca"
