"""trust.presented.PresentedCertificate: the client certificate of one handshake, as one value."""

from __future__ import annotations

import hashlib

import pytest

from trust import issue as I
from trust.presented import PresentedCertificate

CA = I.ca("presented CA")
INTER = I.ca("presented intermediate", issuer=CA)
ALICE = I.client(INTER, "alice")


def test_parse_gives_the_der_chain_leaf_and_facts() -> None:
    der, inter = I.der(ALICE.cert), I.der(INTER.cert)
    cert = PresentedCertificate.parse(der, [inter, der])  # a client repeating its leaf in the chain
    assert cert.der == der and cert.chain_der == (inter,)
    assert cert.fingerprint == hashlib.sha256(der).hexdigest() == ALICE.fingerprint
    assert cert.leaf == ALICE.cert and cert.parsed_leaf is cert.leaf and cert.parse_error is None
    assert cert.not_after == ALICE.cert.not_valid_after_utc and cert.not_before == ALICE.cert.not_valid_before_utc
    assert cert.not_after_ts == ALICE.cert.not_valid_after_utc.timestamp()
    assert cert.subject == "CN=alice" and cert.common_name == "alice"
    assert cert.intermediates == (INTER.cert,)


def test_the_cache_key_covers_the_leaf_and_the_chain() -> None:
    der, inter = I.der(ALICE.cert), I.der(INTER.cert)
    alone, chained = PresentedCertificate(der), PresentedCertificate(der, (inter,))
    assert alone.cache_key == hashlib.sha256(der).digest()
    h = hashlib.sha256(der)
    h.update(len(inter).to_bytes(4, "big"))
    h.update(inter)
    assert chained.cache_key == h.digest() != alone.cache_key
    assert PresentedCertificate(der, (inter,)).cache_key == chained.cache_key


def test_a_der_that_does_not_parse_is_kept_with_its_error() -> None:
    garbage = b"\x30\x03garbage"
    cert = PresentedCertificate.received(garbage)
    assert cert.fingerprint == hashlib.sha256(garbage).hexdigest()
    assert cert.parsed_leaf is None and cert.parse_error
    assert cert.not_after is None and cert.not_after_ts is None and cert.subject == "" and cert.common_name is None
    with pytest.raises(ValueError):
        cert.leaf
    with pytest.raises(ValueError):
        PresentedCertificate.parse(garbage)


def test_the_leaf_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography import x509

    calls: list[bytes] = []
    real = x509.load_der_x509_certificate
    monkeypatch.setattr(x509, "load_der_x509_certificate", lambda d: calls.append(d) or real(d))
    cert = PresentedCertificate.received(I.der(ALICE.cert))
    _ = cert.leaf, cert.leaf, cert.not_after, cert.subject, cert.common_name, cert.parsed_leaf
    assert calls == [I.der(ALICE.cert)]


def test_shared_values_for_the_same_chain_while_one_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from cryptography import x509

    calls: list[bytes] = []
    real = x509.load_der_x509_certificate
    monkeypatch.setattr(x509, "load_der_x509_certificate", lambda d: calls.append(d) or real(d))
    der, inter = I.der(ALICE.cert), I.der(INTER.cert)
    first = PresentedCertificate.shared(der, [inter])
    assert PresentedCertificate.shared(der, (inter,)) is first  # a second connection: nothing parsed
    other_chain = PresentedCertificate.shared(der)
    assert other_chain is not first and other_chain.cache_key != first.cache_key  # another chain: its own
    assert len(calls) == 2 and first.leaf == ALICE.cert and first.chain_der == (inter,)
    first_key = first.cache_key
    del first
    gc.collect()
    again = PresentedCertificate.shared(der, [inter])  # the last holder went away: a new value, parsed
    assert again.cache_key == first_key and len(calls) == 3
    garbage = PresentedCertificate.shared(b"\x30\x03garbage")
    assert garbage.parse_error and PresentedCertificate.shared(b"\x30\x03garbage") is garbage
