"""Issue 4 black-box tests: trust-store edits and reloads through the real gateway process."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.blackbox import (CERTGATE, Gateway, Pki, free_port, handshake_refused, request, tls_handshake, wait_for,
                            write_config)
from tests.tls_support import EchoUpstream
from trust import issue as I
from trust.folder import atomic_remove, atomic_write


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    u = EchoUpstream()
    yield u
    u.close()


def trust_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`certgate trust ARGS --config cfg` as an operator runs it."""
    return subprocess.run([CERTGATE, "trust", *args, "--config", str(cfg)], capture_output=True, text=True,
                          timeout=60)


def refusal_alert(port: int, cert: object, ca: str) -> str:
    """The TLS error a client gets when the gateway refuses its certificate ("" if none)."""
    try:
        s = tls_handshake(port, cert, ca)  # type: ignore[arg-type]
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            s.recv(1024)  # TLS 1.3: the alert arrives here
        finally:
            s.close()
    except ssl.SSLError as e:
        return str(e)
    return ""


def test_ca_added_and_removed_with_certgate_trust_without_restart(tmp_path: Path, upstream: EchoUpstream) -> None:
    pki = Pki(tmp_path / "pki")
    cfg = write_config(tmp_path, pki, upstream=upstream.url, extra={"trust": {"reload_interval": 3600}})
    partner = I.ca("partner CA")
    partner_pem = tmp_path / "partner-ca.pem"
    partner_pem.write_bytes(partner.cert_pem())
    carol = I.client(partner, "carol")
    carol_cert, carol_key = carol.write(tmp_path / "clients", "carol")
    from tests.blackbox import ClientCert

    carol_cc = ClientCert("carol", carol_cert, carol_key, carol.fingerprint)
    with Gateway(cfg) as gw:
        pid = gw.proc.pid if gw.proc else None
        assert handshake_refused(gw.port, carol_cc, pki.ca_pem)
        assert "unknown ca" in refusal_alert(gw.port, carol_cc, pki.ca_pem)
        added = trust_cli(cfg, "add", str(partner_pem), "--name", "partner.pem")
        assert added.returncode == 0, added.stderr
        # the very next handshake uses the new store (the file-watch timer is 1 h here)
        status, _, body = request(gw.port, cert=carol_cc, ca=pki.ca_pem)
        assert status == 200 and body == b"user=carol\n"
        removed = trust_cli(cfg, "remove", "partner.pem")
        assert removed.returncode == 0, removed.stderr
        assert handshake_refused(gw.port, carol_cc, pki.ca_pem)
        assert "unknown ca" in refusal_alert(gw.port, carol_cc, pki.ca_pem)
        # alice's CA was never touched
        assert request(gw.port, cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
        assert gw.proc is not None and gw.proc.pid == pid and gw.proc.poll() is None  # no restart
        assert "refused" in gw.log() and "carol" in gw.log()


def test_broken_edit_keeps_the_gateway_serving(tmp_path: Path, upstream: EchoUpstream) -> None:
    pki = Pki(tmp_path / "pki")
    admin_port = free_port()
    cfg = write_config(tmp_path, pki, upstream=upstream.url, extra={"admin": {"port": admin_port}})
    alice = pki.client("alice")

    def health() -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/health", timeout=5) as r:
            return json.loads(r.read())

    with Gateway(cfg) as gw:
        wait_for(lambda: health()["status"] == "ok", 10, what="the admin health endpoint")
        (pki.store / "broken.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
        gw.signal(signal.SIGHUP)
        wait_for(lambda: "broken.pem" in gw.log(), 10, what="the broken file to be reported")
        for _ in range(5):
            assert request(gw.port, cert=alice, ca=pki.ca_pem)[0] == 200
        assert "reload" in gw.log() and "failed" in gw.log()
        h = health()
        assert h["status"] == "degraded" and "broken.pem" in str(h["problems"]), h
        # a server key that does not match is refused the same way
        good_key = pki.server_key.read_bytes()
        pki.server_key.write_bytes(I.client(pki.ca, "x").key_pem())
        wait_for(lambda: "does not belong" in gw.log(), 10, what="the bad key to be reported")
        assert request(gw.port, cert=alice, ca=pki.ca_pem)[0] == 200
        pki.server_key.write_bytes(good_key)
        (pki.store / "broken.pem").unlink()
        wait_for(lambda: gw.log().count("now used for new handshakes") >= 1, 10, what="a good reload")
        assert request(gw.port, cert=alice, ca=pki.ca_pem)[0] == 200
        assert health()["status"] == "ok"


def test_reload_under_load_loses_no_request(tmp_path: Path, upstream: EchoUpstream) -> None:
    """B7-1: clients keep making requests while the store is edited many times: zero failures."""
    pki = Pki(tmp_path / "pki")
    cfg = write_config(tmp_path, pki, upstream=upstream.url, extra={"trust": {"reload_interval": 0.2}})
    alice, bob = pki.client("alice"), pki.client("bob")
    failures: list[str] = []
    done = threading.Event()
    counts = {"new": 0, "keepalive": 0}

    def new_connections() -> None:
        deadline = time.monotonic() + 20
        while not done.is_set() and time.monotonic() < deadline and counts["new"] < 400:
            try:
                status, _, body = request(gw.port, cert=alice, ca=pki.ca_pem, timeout=10)
                if status != 200 or body != b"user=alice\n":
                    failures.append(f"new connection: {status} {body!r}")
            except Exception as e:  # every failure counts
                failures.append(f"new connection: {e!r}")
            counts["new"] += 1

    def keep_alive() -> None:
        import http.client

        from tests.blackbox import client_context

        conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=client_context(bob, pki.ca_pem),
                                           timeout=10)
        deadline = time.monotonic() + 20
        try:
            while not done.is_set() and time.monotonic() < deadline and counts["keepalive"] < 400:
                try:
                    conn.request("GET", "/", headers={"Host": "localhost"})
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200 or body != b"user=bob\n":
                        failures.append(f"keep-alive: {resp.status} {body!r}")
                except Exception as e:
                    failures.append(f"keep-alive: {e!r}")
                counts["keepalive"] += 1
        finally:
            conn.close()

    with Gateway(cfg) as gw:
        threads = [threading.Thread(target=new_connections), threading.Thread(target=keep_alive)]
        for t in threads:
            t.start()
        waiter = threading.Event()
        edits = 0
        for i in range(40):
            extra = pki.store / f"extra-{i % 3}.pem"
            if extra.exists():
                atomic_remove(extra)
            else:
                atomic_write(extra, I.ca(f"extra CA {i}").cert_pem())
            edits += 1
            if i % 10 == 5:
                gw.signal(signal.SIGHUP)
            if i == 20:  # a broken edit in the middle: the old store keeps serving
                atomic_write(pki.store / "broken.pem", b"not a certificate")
            if i == 24:
                atomic_remove(pki.store / "broken.pem")
            waiter.wait(0.05)
        done.set()
        for t in threads:
            t.join(30)
        log = gw.log()
    print(f"reload under load: {counts} requests, {edits} edits, {log.count('now used for new handshakes')} reloads")
    assert not failures, failures[:5]
    assert counts["new"] >= 20 and counts["keepalive"] >= 20, counts
    assert edits == 40
    assert log.count("now used for new handshakes") >= 10, "the edits did not cause reloads"
    assert "broken.pem" in log
