"""TLS listener handshakes in memory (iosim, one Clock): need/want/none and the identity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU
from OpenSSL import SSL
from twisted.internet.task import Clock

from proxy.listener.identity import ConnectionIdentity
from proxy.listener.reload import TrustState
from proxy.listener.tls import LiveServerTLS, handshake_record
from proxy.listener.verify import RECORDS
from tests.tls_support import I, ClientTLS, TlsPki, connect, make_config

MODES = ("need", "want", "none")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return TlsPki(tmp_path_factory.mktemp("tlspki"))


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(I.utcnow().timestamp())
    return c


def listener(pki: TlsPki, clock: Clock, mode: str = "need", **kw: Any) -> tuple[TrustState, LiveServerTLS]:
    cfg = make_config(pki, client_auth=mode, **kw)
    state = TrustState(cfg, clock)
    return state, LiveServerTLS(state, cfg)


@pytest.fixture(scope="module")
def certs(pki: TlsPki) -> dict[str, I.Issued | None]:
    other_ca = I.ca("some other CA")
    return {
        "good": pki.client("alice"),
        "none": None,
        "expired": pki.expired("old"),
        "unknown-ca": I.client(other_ca, "eve"),
        # same issuer *name* as the trusted CA, another key
        "rogue-ca": I.client(I.ca("tls test CA"), "mallory"),
        "wrong-eku": pki.client("srv", eku=(EKU.SERVER_AUTH,)),
        "two-cn": pki.client(["alice", "bob"]),
        "nul-cn": pki.client("alice\x00.evil"),
    }


#: The TLS alert a need-mode refusal sends (what browsers and curl show).
NEED_ALERT = {
    "none": ("handshake failure", "certificate required"),  # TLS 1.2, TLS 1.3
    "expired": ("certificate expired",) * 2,
    "unknown-ca": ("unknown ca",) * 2,
    "rogue-ca": ("bad certificate",) * 2,
    "wrong-eku": ("unsupported certificate",) * 2,
    "two-cn": ("bad certificate",) * 2,
    "nul-cn": ("bad certificate",) * 2,
}

#: Expected outcome per case in want mode: (account, verdict ok, reason code or text in invalid_reason)
WANT = {
    "good": ("alice", True, None),
    "expired": (None, False, "expired"),
    "unknown-ca": (None, False, "unknown-ca"),
    "rogue-ca": (None, False, None),
    "wrong-eku": (None, False, None),
    "two-cn": (None, True, "2 CN"),
    "nul-cn": (None, True, "U+0000"),
}


@pytest.mark.parametrize("case", ["good", "none", "expired", "unknown-ca", "rogue-ca", "wrong-eku", "two-cn",
                                  "nul-cn"])
@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_need_want_none_matrix(pki: TlsPki, clock: Clock, certs: dict[str, Any], case: str, version: int) -> None:
    issued = certs[case]
    for mode in MODES:
        state, creator = listener(pki, clock, mode)
        c = connect(creator, ClientTLS.presenting(pki, issued, max_version=version), clock)
        ident = c.identity
        if mode == "need":
            if case == "good":
                assert c.established and ident is not None and ident.ok and ident.account == "alice"
                assert c.roundtrip(b"hi") == b"echo:hi"
            else:
                # refused inside the handshake: the server never completed it, nothing reached the app
                assert not c.server.handshake_done, (mode, case)
                assert ident is None
                assert c.client.lost_reason is not None
                alert = NEED_ALERT[case][version == SSL.TLS1_3_VERSION]
                assert f"alert {alert}" in str(c.client.lost_reason.value), (case, c.client.lost_reason.value)
                if issued is not None:
                    assert state.current.verifier.refused == 1, (mode, case)
        elif mode == "none":
            assert c.established, (mode, case)
            assert ident is not None and not ident.presented and ident.verdict is None and ident.account is None
            # none mode does not even ask for a certificate
            assert state.current.verifier.refused == 0
        else:  # want
            assert c.established, (mode, case)
            assert ident is not None
            if issued is None:
                assert not ident.presented and ident.verdict is None and ident.invalid_reason is None
                continue
            account, ok, why = WANT[case]
            assert ident.presented
            assert ident.account == account
            assert ident.verdict.ok is ok
            assert ident.fingerprint == issued.fingerprint
            if case == "good":
                assert ident.ok and ident.invalid_reason is None
            else:
                # never silently "no certificate": the reason is recorded for the error page
                assert not ident.ok and ident.invalid_reason, case
                if why:
                    assert why in ident.invalid_reason
            assert c.roundtrip(b"x") == b"echo:x"


def test_want_mode_reason_codes(pki: TlsPki, clock: Clock, certs: dict[str, Any]) -> None:
    """The verdict's reasons say what is wrong: expired, unknown CA, wrong usage, revoked."""
    _, creator = listener(pki, clock, "want")
    codes = {}
    for case in ("expired", "unknown-ca", "rogue-ca", "wrong-eku"):
        c = connect(creator, ClientTLS.presenting(pki, certs[case]), clock)
        codes[case] = c.identity.verdict.codes
    assert "expired" in codes["expired"]
    assert "unknown-ca" in codes["unknown-ca"]
    assert codes["rogue-ca"] and "expired" not in codes["rogue-ca"]
    assert any("usage" in code or "eku" in code for code in codes["wrong-eku"]), codes["wrong-eku"]


def test_identity_fields(pki: TlsPki, clock: Clock) -> None:
    _, creator = listener(pki, clock, "need")
    alice = pki.client("alice")
    clock.advance(12.5)
    c = connect(creator, ClientTLS.presenting(pki, alice, max_version=SSL.TLS1_2_VERSION), clock)
    ident = c.identity
    assert isinstance(ident, ConnectionIdentity)
    assert ident.presented and ident.ok and ident.account == "alice" and ident.mapping_error is None
    assert ident.fingerprint == alice.fingerprint
    assert ident.subject == "CN=alice"
    assert ident.issuer == pki.ca.cert.subject.rfc4514_string()
    assert ident.handshake_at == clock.seconds()
    assert ident.full_handshake is True
    assert ident.protocol == "TLSv1.2"
    assert ident.cipher.startswith("ECDHE-ECDSA-") and "GCM" in ident.cipher or "CHACHA20" in ident.cipher
    assert ident.client_ip and isinstance(ident.client_port, int)
    assert ident.server_name == "localhost"
    assert ident.leaf is not None and ident.leaf.public_bytes(Encoding.DER) == I.der(alice.cert)
    # the client's OpenSSL completes its chain from its own store (our root): recorded as sent
    assert ident.chain_der == (I.der(pki.ca.cert),)
    with pytest.raises(Exception):
        ident.account = "bob"  # type: ignore[misc]  # frozen
    c13 = connect(creator, ClientTLS.presenting(pki, alice), clock)
    assert c13.identity.protocol == "TLSv1.3" and c13.identity.cipher.startswith("TLS_AES_")


def test_chain_with_intermediate(pki: TlsPki, clock: Clock, tmp_path: Path) -> None:
    """The intermediate the client sends is what trust verifies against the root in the store."""
    inter = I.ca("tls test intermediate", issuer=pki.ca)
    leaf = I.client(inter, "carol")
    _, creator = listener(pki, clock, "want")
    c = connect(creator, ClientTLS.presenting(pki, leaf), clock)
    assert c.identity.ok and c.identity.account == "carol"
    assert c.identity.chain_der == (I.der(inter.cert),)
    # without the intermediate the chain cannot be built: refused with a reason
    c2 = connect(creator, ClientTLS.presenting(pki, leaf, chain=()), clock)
    assert not c2.identity.ok and c2.identity.verdict.codes


def test_deep_chain_with_wrong_usage_reports_usage(pki: TlsPki, clock: Clock) -> None:
    """OpenSSL complains about the leaf before walking the chain; trust still sees all of it."""
    i1 = I.ca("tls i1", issuer=pki.ca)
    i2 = I.ca("tls i2", issuer=i1)
    leaf = I.client(i2, "dave", eku=(EKU.SERVER_AUTH,))
    _, creator = listener(pki, clock, "want")
    c = connect(creator, ClientTLS.presenting(pki, leaf), clock)
    assert c.identity.chain_der == (I.der(i2.cert), I.der(i1.cert))
    assert "unknown-ca" not in c.identity.verdict.codes
    assert not c.identity.verdict.ok


def test_client_ca_list_is_the_store(pki: TlsPki, clock: Clock) -> None:
    """The CertificateRequest names every CA of the store (browsers offer only fitting certs)."""
    second = I.ca("second client CA")
    (pki.store / "second.pem").write_bytes(second.cert_pem())
    try:
        for mode in ("need", "want"):
            _, creator = listener(pki, clock, mode)
            cl = ClientTLS.presenting(pki, pki.client("alice"))
            connect(creator, cl, clock)
            names = {n.der() for n in cl.connections[-1].get_client_ca_list()}
            assert names == {pki.ca.cert.subject.public_bytes(), second.cert.subject.public_bytes()}
        _, creator = listener(pki, clock, "none")
        cl = ClientTLS.presenting(pki, None)
        connect(creator, cl, clock)
        assert cl.connections[-1].get_client_ca_list() == []
    finally:
        (pki.store / "second.pem").unlink()


def test_pinned_certificate(pki: TlsPki, clock: Clock) -> None:
    """A self-signed certificate in pinned/ is accepted on an exact match only."""
    pinned = I.client(None, "robot")
    (pki.store / "pinned").mkdir(exist_ok=True)
    (pki.store / "pinned" / "robot.pem").write_bytes(pinned.cert_pem())
    try:
        _, creator = listener(pki, clock, "need")
        c = connect(creator, ClientTLS.presenting(pki, pinned), clock)
        assert c.established and c.identity.account == "robot" and c.identity.verdict.pinned
        other = I.client(None, "robot")  # same name, other key
        c2 = connect(creator, ClientTLS.presenting(pki, other), clock)
        assert c2.identity is None and not c2.server.handshake_done
    finally:
        (pki.store / "pinned" / "robot.pem").unlink()


def test_revoked_by_crl(tmp_path: Path, clock: Clock) -> None:
    pki = TlsPki(tmp_path)
    bad = pki.client("revoked")
    (pki.store / "ca.crl").write_bytes(I.pem(I.crl(pki.ca, [bad.cert.serial_number])))
    state, creator = listener(pki, clock, "want")
    c = connect(creator, ClientTLS.presenting(pki, bad), clock)
    assert "revoked" in c.identity.verdict.codes and "revoked" in c.identity.invalid_reason
    ok = connect(creator, ClientTLS.presenting(pki, pki.client("fine")), clock)
    assert ok.identity.ok
    _, need = listener(pki, clock, "need")
    refused = connect(need, ClientTLS.presenting(pki, bad), clock)
    assert refused.identity is None and "alert certificate revoked" in str(refused.client.lost_reason.value)


def _tamper_certificate_verify(data: bytes, state: dict[str, Any]) -> bytes:
    """Flip the last signature byte of a plaintext TLS 1.2 CertificateVerify (type 15)."""
    out = bytearray(data)
    i = 0
    while i + 5 <= len(out) and not state.get("ccs"):
        rtype, rlen = out[i], int.from_bytes(out[i + 3:i + 5], "big")
        if rtype == 20:
            state["ccs"] = True
            break
        if rtype == 22:
            j, end = i + 5, i + 5 + rlen
            while j + 4 <= end:
                htype, hlen = out[j], int.from_bytes(out[j + 1:j + 4], "big")
                if htype == 15:
                    out[j + 4 + hlen - 1] ^= 0x01
                    state["tampered"] = True
                j += 4 + hlen
        i += 5 + rlen
    return bytes(out)


@pytest.mark.parametrize("mode", ["need", "want"])
def test_certificate_without_proof_of_possession_is_refused(pki: TlsPki, clock: Clock, mode: str) -> None:
    """CERT-15: a Certificate whose CertificateVerify signature is wrong never authenticates.

    TLS 1.2 sends CertificateVerify in clear, so the test corrupts its signature in flight;
    OpenSSL checks it (decrypt_error) even in want mode, where nothing is downgraded.
    """
    state: dict[str, Any] = {}
    _, creator = listener(pki, clock, mode)
    c = connect(creator, ClientTLS.presenting(pki, pki.client("alice"), max_version=SSL.TLS1_2_VERSION), clock,
                tamper=lambda data: _tamper_certificate_verify(data, state))
    assert state.get("tampered"), "the CertificateVerify was not found in the client's flight"
    assert not c.server.handshake_done and c.identity is None
    assert c.server_tls.wrappedProtocol is None or c.server.lost_reason is not None
    # the same client without tampering is accepted (the test can fail for the right reason only)
    ok = connect(creator, ClientTLS.presenting(pki, pki.client("alice"), max_version=SSL.TLS1_2_VERSION), clock)
    assert ok.identity is not None and ok.identity.ok


def test_verdict_cache_hit_on_second_handshake(pki: TlsPki, clock: Clock) -> None:
    state, creator = listener(pki, clock, "need")
    alice = pki.client("alice")
    connect(creator, ClientTLS.presenting(pki, alice), clock)
    misses = state.verdicts.misses
    c = connect(creator, ClientTLS.presenting(pki, alice), clock)
    assert c.identity.ok
    assert state.verdicts.misses == misses and state.verdicts.hits >= 1


def test_record_is_per_connection(pki: TlsPki, clock: Clock) -> None:
    _, creator = listener(pki, clock, "want")
    a = connect(creator, ClientTLS.presenting(pki, pki.client("alice")), clock)
    b = connect(creator, ClientTLS.presenting(pki, pki.expired("x")), clock)
    assert a.identity.ok and not b.identity.ok
    assert a.identity.fingerprint != b.identity.fingerprint
    # identify() keeps only the frozen identity: the handshake record is released
    assert handshake_record(a.server_tls) is None and handshake_record(b.server_tls) is None


def test_expiry_during_clock_time(tmp_path: Path) -> None:
    """The verdict uses the injected clock: a certificate past notAfter on the clock is refused."""
    pki = TlsPki(tmp_path)
    soon = pki.client("soon", not_after=I.utcnow() + dt.timedelta(hours=1))
    clock = Clock()
    clock.advance(I.utcnow().timestamp())
    _, creator = listener(pki, clock, "want")
    assert connect(creator, ClientTLS.presenting(pki, soon), clock).identity.ok
    clock.advance(2 * 3600)
    late = connect(creator, ClientTLS.presenting(pki, soon), clock)
    assert not late.identity.ok and "expired" in late.identity.verdict.codes


def test_a_resumed_handshake_never_counts_as_presented(pki: TlsPki, clock: Clock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Safety net behind "resumption off": were a session ever resumed, no certificate is proved."""
    import proxy.listener.tls

    monkeypatch.setattr(proxy.listener.tls, "_session_reused", lambda conn: True)
    _, want = listener(pki, clock, "want")
    c = connect(want, ClientTLS.presenting(pki, pki.client("alice")), clock)
    assert c.identity is not None and not c.identity.presented and c.identity.full_handshake is False
    assert c.identity.account is None
    _, need = listener(pki, clock, "need")
    c2 = connect(need, ClientTLS.presenting(pki, pki.client("alice")), clock)
    assert c2.identity is None and c2.server.lost_reason is not None


@pytest.mark.parametrize("mode", ["need", "want"])
def test_a_failing_verifier_refuses(pki: TlsPki, clock: Clock, mode: str) -> None:
    """Fail closed: an exception while deciding refuses the handshake in every mode."""
    state, creator = listener(pki, clock, mode)

    class Broken:
        def get_or_verify(self, *a: Any) -> Any:
            raise RuntimeError("verifier bug")

    state.current.verifier.verdicts = Broken()
    c = connect(creator, ClientTLS.presenting(pki, pki.client("alice")), clock)
    assert c.identity is None and not c.server.handshake_done
    assert "alert bad certificate" in str(c.client.lost_reason.value)


def test_trust_decides_not_openssl(tmp_path: Path, clock: Clock) -> None:
    """A store holding only an intermediate CA: OpenSSL alone would refuse (no root, no
    PARTIAL_CHAIN), trust accepts it as an anchor; and the root's other children stay out."""
    pki = TlsPki(tmp_path)
    inter = I.ca("only the intermediate", issuer=pki.ca)
    (pki.store / "ca.pem").unlink()
    (pki.store / "inter.pem").write_bytes(inter.cert_pem())
    _, creator = listener(pki, clock, "need")
    c = connect(creator, ClientTLS.presenting(pki, I.client(inter, "erin"), chain=()), clock)
    assert c.established and c.identity.account == "erin"
    sibling = connect(creator, ClientTLS.presenting(pki, pki.client("frank")), clock)
    assert sibling.identity is None and "alert unknown ca" in str(sibling.client.lost_reason.value)


def test_the_refusal_reason_lives_on_each_connections_record(pki: TlsPki, clock: Clock,
                                                             certs: dict[str, I.Issued | None]) -> None:
    """Two refused connections of one trust generation keep their own alert codes; the shared
    verifier keeps none."""
    state, creator = listener(pki, clock, "need")
    made: list[SSL.Connection] = []
    original = creator.serverConnectionForTLS

    def keep(tls: Any) -> SSL.Connection:
        made.append(original(tls))
        return made[-1]

    creator.serverConnectionForTLS = keep  # type: ignore[method-assign]
    expired = connect(creator, ClientTLS.presenting(pki, certs["expired"]), clock)
    unknown = connect(creator, ClientTLS.presenting(pki, certs["unknown-ca"]), clock)
    assert "alert certificate expired" in str(expired.client.lost_reason.value)
    assert "alert unknown ca" in str(unknown.client.lost_reason.value)
    first, second = RECORDS.get(made[0]), RECORDS.get(made[1])
    assert first is not None and second is not None and first.verifier is second.verifier
    assert (first.refusal_error, second.refusal_error) == (10, 20)  # certificate_expired, unknown_ca
    assert not hasattr(state.current.verifier, "refusal_error")


def test_the_identity_carries_the_certificate_made_in_the_handshake(pki: TlsPki, clock: Clock) -> None:
    alice = pki.client("alice")
    _, creator = listener(pki, clock, "want")
    c = connect(creator, ClientTLS.presenting(pki, alice), clock)
    ident = c.identity
    assert ident is not None and ident.ok and ident.certificate is not None
    cert = ident.certificate
    assert cert.der == I.der(alice.cert) and cert.fingerprint == alice.fingerprint == ident.fingerprint
    assert ident.leaf is cert.leaf and ident.leaf_der is cert.der and ident.chain_der == cert.chain_der
    assert cert.not_after == alice.cert.not_valid_after_utc and cert.common_name == "alice"
