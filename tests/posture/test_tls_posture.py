"""Issue 12: the TLS posture of real gateways, checked by sslyze (in its own virtualenv).

``make sslyze-venv`` creates ``.venv-sslyze`` (``make test`` does it first). Each case starts
a real gateway (``need`` or ``want``), runs ``tests/posture/sslyze_scan.py`` with sslyze's
Python as a subprocess, and asserts: TLS 1.2 and 1.3 only; AEAD suites with ephemeral key
exchange only; no TLS 1.2 session-id or ticket resumption; no TLS 1.3 early data; no client-
initiated renegotiation; no compression; the client authentication sslyze detects matches the
configured mode; the CertificateRequest names the trust store's CA. TLS 1.3 resumption and
tickets, which sslyze does not test, are checked here with a real client too.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness.client import client_context
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream
from tests.blackbox.test_tls_tickets import count_tickets

ROOT = Path(__file__).resolve().parents[2]
SSLYZE_PYTHON = ROOT / ".venv-sslyze" / "bin" / "python"
SCANNER = Path(__file__).with_name("sslyze_scan.py")
AEAD = ("GCM", "CHACHA20_POLY1305", "CCM")


def sslyze_python() -> Path:
    if not SSLYZE_PYTHON.exists():
        raise RuntimeError(f"{SSLYZE_PYTHON} is missing: run `make sslyze-venv` (pip package sslyze, in its own "
                           "virtualenv)")
    return SSLYZE_PYTHON


def scan(port: int, cert: Any = None) -> dict[str, Any]:
    argv = [str(sslyze_python()), str(SCANNER), "127.0.0.1", str(port), "localhost"]
    if cert is not None:
        argv += [str(cert.cert_path), str(cert.key_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    u = RecordingUpstream()
    yield u
    u.close()


@pytest.fixture(params=["need", "want"], scope="module")
def posture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            upstream: RecordingUpstream) -> Iterator[tuple[str, Gateway, Pki, dict[str, Any]]]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"posture-{mode}")
    pki = Pki(tmp / "pki")
    cfg = write_config(tmp, pki, upstream=upstream.url, extra={"listen": {"client_auth": mode,
                                                                          "max_connections": 1000}})
    with Gateway(cfg) as gw:
        result = scan(gw.port, pki.client("alice"))  # the scan presents alice; the probe presents nothing
        yield mode, gw, pki, result


def test_scan_completed(posture: tuple[str, Gateway, Pki, dict[str, Any]]) -> None:
    _, _, _, r = posture
    assert r["connectivity"] == "COMPLETED", r
    assert r["errors"] == {}


def test_only_tls12_and_tls13(posture: tuple[str, Gateway, Pki, dict[str, Any]]) -> None:
    r = posture[3]
    accepted = {v for v, suites in r["versions"].items() if suites}
    assert accepted == {"tls_1_2", "tls_1_3"}, r["versions"]


def test_aead_and_forward_secrecy_only(posture: tuple[str, Gateway, Pki, dict[str, Any]]) -> None:
    r = posture[3]
    suites = r["versions"]["tls_1_2"] + r["versions"]["tls_1_3"]
    assert suites
    for s in suites:
        assert any(a in s["name"] for a in AEAD), s
        assert s["ephemeral_key"] is not None, s  # (EC)DHE: forward secrecy
    assert all(s["name"].startswith("TLS_ECDHE_") for s in r["versions"]["tls_1_2"])


def test_no_resumption_no_early_data(posture: tuple[str, Gateway, Pki, dict[str, Any]]) -> None:
    r = posture[3]
    assert r["session_id_resumption"] == "NOT_SUPPORTED" and r["session_id_resumptions_succeeded"] == 0
    assert r["ticket_resumption"] == "NOT_SUPPORTED" and r["ticket_resumptions_succeeded"] == 0
    assert r["early_data"] is False


def test_no_renegotiation_no_compression(posture: tuple[str, Gateway, Pki, dict[str, Any]]) -> None:
    r = posture[3]
    assert r["client_renegotiation_dos"] is False and r["client_renegotiations_succeeded"] == 0
    assert r["compression"] is False


def test_client_auth_and_ca_list(posture: tuple[str, Gateway, Pki, dict[str, Any]]) -> None:
    mode, _, _, r = posture
    assert r["client_auth"] == {"need": "REQUIRED", "want": "OPTIONAL"}[mode]
    for version, names in r["client_ca_names"].items():
        assert any("certgate test CA" in n for n in names), (version, names)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_no_tickets_and_no_resumption_with_a_real_client(posture: tuple[str, Gateway, Pki, dict[str, Any]],
                                                         version: ssl.TLSVersion) -> None:
    """What sslyze does not cover: TLS 1.3 tickets and TLS 1.3 resumption."""
    _, gw, pki, _ = posture
    ctx = client_context(pki.client("alice"), pki.ca_pem, minimum=version, maximum=version)
    assert count_tickets(gw.port, ctx)[0] == 0
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port), 5), server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
        saved = s.session
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port), 5), server_hostname="localhost",
                         session=saved) as again:
        assert again.session_reused is False
