"""Issue 2 black-box tests: the real gateway process, real TLS, a recording upstream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.client import handshake_refused, request
from tests.harness.config import config_port, write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import free_port, wait_for


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    r = RecordingUpstream()
    yield r
    r.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def _headers(item: dict[str, object]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in item["headers"]]  # type: ignore[union-attr,misc]


def test_good_certificate_reaches_upstream_with_account_header(tmp_path: Path, pki: Pki, upstream: RecordingUpstream) -> None:
    """need mode: alice's certificate is forwarded with X-Remote-User: alice and X-Forwarded-*."""
    cfg = write_config(tmp_path, pki, upstream=upstream.url)
    with Gateway(cfg) as gw:
        status, headers, body = request(gw.port, "GET", "/hello?x=1", cert=pki.client("alice"), ca=pki.ca_pem)
        assert status == 200, body
        got = json.loads(body)
        assert got["path"] == "/hello?x=1"
        hs = dict((k.lower(), v) for k, v in got["headers"])
        assert hs["x-remote-user"] == "alice"
        assert hs["x-forwarded-proto"] == "https"
        assert hs["x-forwarded-for"] == "127.0.0.1"
        assert hs["x-forwarded-host"] == f"localhost:{gw.port}"
        assert hs["host"] == f"localhost:{gw.port}"


def test_need_mode_refuses_no_certificate_and_unknown_ca(tmp_path: Path, pki: Pki, upstream: RecordingUpstream) -> None:
    """need mode: no certificate, or one from a rogue CA with the same name, never reaches HTTP."""
    cfg = write_config(tmp_path, pki, upstream=upstream.url)
    with Gateway(cfg) as gw:
        assert handshake_refused(gw.port, None, pki.ca_pem)
        assert handshake_refused(gw.port, pki.rogue_client("alice"), pki.ca_pem)
        # the gateway is still serving good clients afterwards
        assert request(gw.port, cert=pki.client("bob"), ca=pki.ca_pem)[0] == 200
    assert len(upstream.requests) == 1
    assert dict((k.lower(), v) for k, v in _headers(upstream.requests[0]))["x-remote-user"] == "bob"


def test_want_mode_without_certificate_gets_a_clear_403(tmp_path: Path, pki: Pki, upstream: RecordingUpstream) -> None:
    """want mode: no certificate -> a 403 page that says a certificate is needed; nothing forwarded."""
    cfg = write_config(tmp_path, pki, upstream=upstream.url, extra={"listen": {"client_auth": "want"}})
    with Gateway(cfg) as gw:
        status, headers, body = request(gw.port, "GET", "/", ca=pki.ca_pem, headers={"Accept": "text/html"})
        assert status == 403
        assert b"certificate" in body.lower()
        status, _, _ = request(gw.port, "GET", "/", cert=pki.client("alice"), ca=pki.ca_pem)
        assert status == 200
    assert len(upstream.requests) == 1


def test_client_supplied_identity_header_is_replaced(tmp_path: Path, pki: Pki, upstream: RecordingUpstream) -> None:
    """A client's X-Remote-User (any case, repeated, underscore spelling) never reaches the upstream."""
    cfg = write_config(tmp_path, pki, upstream=upstream.url)
    with Gateway(cfg) as gw:
        status, _, body = request(gw.port, "GET", "/", cert=pki.client("alice"), ca=pki.ca_pem,
                                  headers=[("X-Remote-User", "root"), ("x-remote-user", "admin"),
                                           ("X_Remote_User", "root"), ("X-Forwarded-For", "10.0.0.1")])
        assert status == 200
    hs = _headers(upstream.requests[0])
    users = [v for k, v in hs if k.lower().replace("_", "-") == "x-remote-user"]
    assert users == ["alice"]
    assert [v for k, v in hs if k.lower() == "x-forwarded-for"] == ["127.0.0.1"]


def test_upstream_down_gives_502_without_internals(tmp_path: Path, pki: Pki) -> None:
    """A dead upstream answers 502 with no address, port or exception text."""
    dead = free_port()
    cfg = write_config(tmp_path, pki, upstream=f"http://127.0.0.1:{dead}")
    with Gateway(cfg) as gw:
        status, headers, body = request(gw.port, "GET", "/", cert=pki.client("alice"), ca=pki.ca_pem)
    assert status == 502
    text = body.decode("latin-1").lower()
    assert str(dead) not in text and "127.0.0.1" not in text
    assert "traceback" not in text and "refused" not in text and "error:" not in text


def test_twistd_plugin_serves_the_same(tmp_path: Path, pki: Pki, upstream: RecordingUpstream) -> None:
    """`twistd -n certgate --config FILE` runs the same gateway."""
    cfg = write_config(tmp_path, pki, upstream=upstream.url)
    port = config_port(cfg)
    twistd = str(Path(sys.executable).parent / "twistd")
    proc = subprocess.Popen([twistd, "-n", "--pidfile=", "certgate", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        def ok() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            return request(port, cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200

        wait_for(ok, 20, what="twistd certgate to serve")
    finally:
        proc.terminate()
        proc.wait(10)
    assert any(dict((k.lower(), v) for k, v in _headers(r)).get("x-remote-user") == "alice"
               for r in upstream.requests)


def test_bad_config_stops_the_process_with_every_problem(tmp_path: Path, pki: Pki) -> None:
    """`certgate run` with a broken config exits non-zero and prints each problem."""
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9", extra={"listen": {"client_auth": "sometimes"}})
    out = subprocess.run([str(Path(sys.executable).parent / "certgate"), "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "[listen] client_auth" in out.stdout + out.stderr


def test_rfc9440_client_cert_headers_carry_the_presented_certificate(tmp_path: Path, upstream: RecordingUpstream) -> None:
    """[headers] client_cert: Client-Cert is the client's own certificate, Client-Cert-Chain its intermediates."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from trust import issue as I

    pki = Pki(tmp_path / "pki")
    inter = I.ca("certgate test intermediate", issuer=pki.ca)
    alice = pki.client("alice", issuer=inter, name="alice-via-inter")
    cfg = write_config(tmp_path, pki, upstream=upstream.url, extra={"headers": {"client_cert": "yes"}})
    with Gateway(cfg) as gw:
        assert request(gw.port, cert=alice, ca=pki.ca_pem)[0] == 200
    hs = dict((k.lower(), v) for k, v in _headers(upstream.requests[0]))
    leaf = x509.load_der_x509_certificate(base64.b64decode(hs["client-cert"].strip(":")))
    assert leaf.fingerprint(hashes.SHA256()).hex() == alice.fingerprint
    chain = [x509.load_der_x509_certificate(base64.b64decode(v.strip().strip(":")))
             for v in hs["client-cert-chain"].split(",")]
    assert [c.subject for c in chain] == [inter.cert.subject]
