"""Receipts: signed, expiring, bound to account and certificate, single use (AUTH-06 at the codec)."""

import pytest

from proxy.login.receipts import ReceiptCodec, ReceiptError, consume
from proxy.stores.memory import MemoryStore
from tests.harness.reactor_thread import resolve

KEY = b"k" * 32
FP = "ab" * 32


def issue(codec=None, **kw):
    args = dict(account="alice", fingerprint=FP, methods=["password", "tls-cert"], now=1000.0, lifetime=300.0)
    args.update(kw)
    return (codec or ReceiptCodec(KEY)).issue(**args)


def test_roundtrip():
    token, rec = issue()
    got = ReceiptCodec(KEY).open(token, account="alice", fingerprint=FP, now=1299.0)
    assert got == rec and got.methods == ("tls-cert", "password") and got.expires_at == 1300.0


@pytest.mark.parametrize("kw,reason", [
    ({"now": 1300.0}, "receipt-expired"),
    ({"account": "bob"}, "receipt-other-account"),
    ({"fingerprint": "cd" * 32}, "receipt-other-certificate"),
    ({"fingerprint": None}, "receipt-other-certificate"),
])
def test_refusals(kw, reason):
    token, _ = issue()
    args = dict(account="alice", fingerprint=FP, now=1001.0)
    args.update(kw)
    with pytest.raises(ReceiptError) as ei:
        ReceiptCodec(KEY).open(token, **args)
    assert ei.value.reason == reason


def test_tampered_payload_and_other_key():
    import base64
    import json

    token, _ = issue()
    head, payload, mac = token.split(".")
    d = json.loads(base64.urlsafe_b64decode(payload + "=="))
    d["m"].append("totp")
    forged = base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    for bad in (f"{head}.{forged}.{mac}", token[:-2] + ("AA" if not token.endswith("AA") else "BB")):
        with pytest.raises(ReceiptError) as ei:
            ReceiptCodec(KEY).open(bad, account="alice", fingerprint=FP, now=1001.0)
        assert ei.value.reason in ("receipt-tampered", "receipt-malformed")
    with pytest.raises(ReceiptError) as ei:
        ReceiptCodec(b"o" * 32).open(token, account="alice", fingerprint=FP, now=1001.0)
    assert ei.value.reason == "receipt-tampered"


@pytest.mark.parametrize("junk", ["", "x", "cgr1..", "cgr2.a.b", "é" * 10, "a" * 5000])
def test_malformed(junk):
    with pytest.raises(ReceiptError):
        ReceiptCodec(KEY).open(junk, account="alice", fingerprint=FP, now=1001.0)


def test_not_after_caps_lifetime():
    _, rec = issue(not_after=1100.0)
    assert rec.expires_at == 1100.0


def test_single_use():
    _, rec = issue()
    store = MemoryStore()
    resolve(consume(store, rec))
    with pytest.raises(ReceiptError) as ei:
        resolve(consume(store, rec))
    assert ei.value.reason == "receipt-reused"
