"""[trust] ocsp keys and [ocsp:NAME] sections through the real config parser and preflight."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.app.service import preflight
from tests.tls_support import TlsPki, make_config


def test_rules_reach_the_trust_settings_and_preflight_checks_store_files(tmp_path: Path) -> None:
    pki = TlsPki(tmp_path)
    cfg = make_config(pki, trust="ocsp = soft\nocsp_nonce = no\n\n[ocsp:corp]\ncas = ca.pem\n"
                                 "responder = http://ocsp.corp.example/\n\n[ocsp:gone]\ncas = missing.pem\nmode = off\n")
    o = cfg.trust.ocsp
    assert o.mode == "soft" and o.enabled and not o.nonce
    assert [(r.name, r.cas, r.mode, r.responder, r.nonce) for r in o.rules] == [
        ("corp", ("ca.pem",), "hard", "http://ocsp.corp.example/", False), ("gone", ("missing.pem",), "off", None, False)]
    texts = [str(p) for p in preflight(cfg, bind=False)]
    assert texts == [f"[ocsp:gone] cas: 'missing.pem' is not a CA file of the trust store {pki.store}"]


def test_off_by_default(tmp_path: Path) -> None:
    cfg = make_config(TlsPki(tmp_path))
    assert cfg.trust.ocsp.mode == "off" and not cfg.trust.ocsp.enabled and cfg.trust.ocsp.rules == ()


def test_the_documented_example_parses(tmp_path: Path) -> None:
    """The [trust]/[ocsp:NAME] example of docs/trust.md "OCSP" is valid as printed."""
    import re

    from proxy.config import parse_config
    from trust import issue as I

    doc = (Path(__file__).resolve().parents[2] / "docs" / "trust.md").read_text()
    example = re.search(r"## OCSP.*?```ini\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    pki = TlsPki(tmp_path)
    for name in ("Corp-Badge-Issuing.pem", "eID-Root.pem"):
        (pki.store / name).write_bytes(I.ca(name).cert_pem())
    text = (f"[listen]\ncertificate = {pki.server_cert}\nkey = {pki.server_key}\n[upstream]\nurl = http://127.0.0.1:9\n"
            + example.replace("store = trust.d", f"store = {pki.store}"))
    cfg = parse_config(text, tmp_path / "certgate.conf")
    assert [(r.name, r.mode, r.nonce) for r in cfg.trust.ocsp.rules] == [("badges", "hard", True), ("eid", "soft", False)]
    assert preflight(cfg, bind=False) == []


def test_reference_config_documents_every_ocsp_key() -> None:
    """conf/certgate.conf names every [trust] key and every [ocsp:NAME] key."""
    from trust.settings import OCSP_KEYS, TRUST_KEYS

    text = (Path(__file__).resolve().parents[2] / "conf" / "certgate.conf").read_text()
    trust = re.search(r"^\[trust\]\n(.*?)(?=^\[)", text, re.S | re.M).group(1)  # type: ignore[union-attr]
    for key in TRUST_KEYS:
        assert re.search(rf"^;?{key} =", trust, re.M), f"[trust] {key} not documented"
    rule = re.search(r"^;\[ocsp:\w+\]\n(.*?)(?=^\[)", text, re.S | re.M).group(1)  # type: ignore[union-attr]
    for key in OCSP_KEYS:
        assert re.search(rf"^;{key} =", rule, re.M), f"[ocsp:NAME] {key} not documented"


def test_ocsp_timeout_must_be_below_the_handshake_deadline(tmp_path: Path) -> None:
    import pytest

    from proxy.config import ConfigError

    with pytest.raises(ConfigError) as ei:
        make_config(TlsPki(tmp_path), trust="ocsp = soft\nocsp_timeout = 12\n")
    assert str(ei.value) == ("[trust] ocsp_timeout: 12 must be below [listen] handshake_timeout (10): the handshake "
                             "deadline would close connections before the OCSP deadline decides")
    assert make_config(TlsPki(tmp_path / "b"), trust="ocsp_timeout = 12\n").trust.ocsp.timeout == 12  # off: unused


def test_every_ocsp_reason_has_plain_words() -> None:
    """The want-mode page says each OCSP refusal in plain words (never "could not be verified")."""
    from proxy.gate import wording
    from trust.ocsp import ERROR_CODES

    for code in ("ocsp-revoked", "ocsp-unknown", *ERROR_CODES):
        assert code in wording._WHY, code
