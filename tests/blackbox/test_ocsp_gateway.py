"""Issue 17 black-box tests: OCSP for client certificates against real `openssl ocsp` responders.

One world of CAs, each with its own OCSP situation (a good/revoked/unknown responder, a
delegated responder, a rogue delegated responder, a dead one, a stopped one, a replaying
server), and real gateways (``need`` and ``want``) doing real handshakes.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.client import handshake_refused, request
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.ocsp import flip_signature, make_response, OpenSSLResponder, ReplayServer, responder_cert
from tests.harness.pki import ClientCert, Pki
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import free_port, wait_for
from trust import issue as I

OCSP_TIMEOUT = 1.5
CERT_ONLY = '[["tls-cert"]]'


@dataclass
class World:
    pki: Pki
    upstream: RecordingUpstream
    replay: ReplayServer
    certs: dict[str, ClientCert] = field(default_factory=dict)
    issued: dict[str, I.Issued] = field(default_factory=dict)
    responders: dict[str, OpenSSLResponder] = field(default_factory=dict)
    raw: str = ""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("ocsp")
    pki = Pki(folder / "pki", clients=())
    w = World(pki=pki, upstream=RecordingUpstream(), replay=ReplayServer())
    clients = folder / "pki" / "clients"

    def leaf(cn: str, ca: I.Issued, url: str | None) -> I.Issued:
        c = I.client(ca, cn, ocsp_urls=(url,) if url else ())
        cert, key = c.write(clients, cn)
        w.certs[cn] = ClientCert(cn, cert, key, c.fingerprint)
        w.issued[cn] = c
        return c

    def ca(stem: str, rule: str) -> I.Issued:
        c = I.ca(f"OCSP {stem} CA")
        (pki.store / f"{stem}-ca.pem").write_bytes(c.cert_pem())
        w.raw += f"\n[ocsp:{stem}]\ncas = {stem}-ca.pem\n{rule}\n"
        return c

    now = I.utcnow()
    try:
        # The test CA: [trust] ocsp = hard applies; the leaves' AIA names a CA-signed responder.
        main = w.responders["main"] = OpenSSLResponder(folder / "r-main", pki.ca)
        main.add(leaf("alice", pki.ca, main.url).cert)
        main.add(leaf("mallory", pki.ca, main.url).cert, revoked_at=now - dt.timedelta(hours=1))
        leaf("nobody", pki.ca, main.url)  # not in the index: "unknown"
        main.start()
        # A delegated responder certificate (OCSP-signing EKU) issued by the CA.
        dca = ca("deleg", "mode = hard")
        deleg = w.responders["deleg"] = OpenSSLResponder(folder / "r-deleg", dca, responder_cert(dca))
        deleg.add(leaf("dora", dca, deleg.url).cert)
        deleg.start()
        # A responder signing with a certificate another CA issued.
        rca = ca("rogue", "mode = hard")
        rogue = w.responders["rogue"] = OpenSSLResponder(folder / "r-rogue", rca,
                                                         responder_cert(I.ca("Elsewhere")))
        rogue.add(leaf("rita", rca, rogue.url).cert)
        rogue.start()
        # Nobody listening: hard refuses, soft accepts with a warning.
        dead = f"http://127.0.0.1:{_closed_port()}/"
        leaf("dan", ca("downhard", f"mode = hard\nresponder = {dead}"), None)
        leaf("sam", ca("downsoft", f"mode = soft\nresponder = {dead}"), None)
        # A stopped responder (SIGSTOP): connections are accepted, never answered.
        sca = ca("slow", "mode = hard")
        slow = w.responders["slow"] = OpenSSLResponder(folder / "r-slow", sca)
        slow.add(leaf("sloane", sca, slow.url).cert)
        slow.start().pause()
        # No OCSP at all for this CA (to show other handshakes go on during a slow check).
        leaf("olga", ca("off", "mode = off"), None)
        # Answers replayed by a loopback server: a bad signature, a stale answer, a captured answer.
        bca = ca("badsig", f"mode = hard\nresponder = {w.replay.url('badsig')}")
        b = leaf("bea", bca, None)
        w.replay.answers["badsig"] = flip_signature(make_response(
            b.cert, bca.cert, bca, this_update=now - dt.timedelta(minutes=1), next_update=now + dt.timedelta(hours=1)))
        tca = ca("stale", f"mode = hard\nnonce = no\nresponder = {w.replay.url('stale')}")
        t = leaf("stan", tca, None)
        w.replay.answers["stale"] = make_response(t.cert, tca.cert, tca, this_update=now - dt.timedelta(days=8),
                                                  next_update=now - dt.timedelta(days=1))
        pca = ca("replay", f"mode = hard\nresponder = {w.replay.url('replay')}")
        cap = w.responders["capture"] = OpenSSLResponder(folder / "r-capture", pca)
        cap.add(leaf("ray", pca, None).cert)
        cap.start()
        w.replay.answers["replay"] = cap.ask(w.issued["ray"].cert, nonce=b"an earlier nonce")
        nca = ca("nononce", f"mode = hard\nnonce = no\nresponder = {w.replay.url('nononce')}")
        cap2 = w.responders["capture2"] = OpenSSLResponder(folder / "r-capture2", nca)
        cap2.add(leaf("nora", nca, None).cert)
        cap2.start()
        w.replay.answers["nononce"] = cap2.ask(w.issued["nora"].cert, nonce=b"an earlier nonce")
        # HTTP-level failures: a 404 from the responder, an answer larger than 64 KiB.
        leaf("hugo", ca("httperr", f"mode = hard\nresponder = {w.replay.url('missing')}"), None)
        leaf("lars", ca("large", f"mode = hard\nresponder = {w.replay.url('large')}"), None)
        w.replay.answers["large"] = b"\x30" * (70 * 1024)
        yield w
    finally:
        for r in w.responders.values():
            r.stop()
        w.replay.close()
        w.upstream.close()


def _gateway(w: World, folder: Path, client_auth: str) -> Gateway:
    cfg = write_config(folder, w.pki, upstream=w.upstream.url, raw=w.raw, extra={
        "listen": {"client_auth": client_auth},
        "trust": {"ocsp": "hard", "ocsp_timeout": OCSP_TIMEOUT},
        "login": {"required_auth_methods": CERT_ONLY},
        "admin": {"port": free_port()},
        "audit": {"file": str(folder / "audit.log")}})
    return Gateway(cfg)


@pytest.fixture(scope="module")
def need(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with _gateway(world, tmp_path_factory.mktemp("need"), "need") as gw:
        yield gw


@pytest.fixture(scope="module")
def want(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with _gateway(world, tmp_path_factory.mktemp("want"), "want") as gw:
        yield gw


def _ok(gw: Gateway, w: World, cn: str) -> bool:
    status, _, _ = request(gw.port, cert=w.certs[cn], ca=w.pki.ca_pem)
    return status == 200


def _metrics(gw: Gateway) -> str:
    import configparser

    cp = configparser.ConfigParser(interpolation=None)
    cp.read(gw.config)
    with urllib.request.urlopen(f"http://127.0.0.1:{cp.getint('admin', 'port')}/metrics", timeout=5) as r:
        return r.read().decode()


def _audit(gw: Gateway) -> list[dict[str, object]]:
    path = gw.config.parent / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metric(gw: Gateway, result: str, source: str) -> float:
    line = f'certgate_ocsp_checks_total{{result="{result}",source="{source}"}} '
    for row in _metrics(gw).splitlines():
        if row.startswith(line):
            return float(row[len(line):])
    return 0.0


def _connected_to(port: int) -> bool:
    """An established loopback TCP connection to ``port`` exists (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[2] == f"0100007F:{port:04X}" and cols[3] == "01":
            return True
    return False


def test_good_is_forwarded_then_served_from_cache(world: World, need: Gateway) -> None:
    assert _ok(need, world, "alice")
    assert _ok(need, world, "alice")
    assert _metric(need, "good", "responder") == 1 and _metric(need, "good", "cache") >= 1
    assert len(world.upstream.requests) >= 2
    rec = [a for a in _audit(need) if a["event"] == "ocsp" and a["decision"] == "good"]
    assert rec and rec[0]["fingerprint"] == world.certs["alice"].fingerprint and rec[0]["mode"] == "hard"
    assert "Received request" in world.responders["main"].log()  # openssl really answered


def test_revoked_is_refused_and_cached_refusal_sends_the_revoked_alert(world: World, need: Gateway) -> None:
    assert handshake_refused(need.port, world.certs["mallory"], world.pki.ca_pem)
    wait_for(lambda: "ocsp-revoked" in need.log(), 5, what="the OCSP refusal in the log")
    assert "closed after the OCSP check" in need.log()
    # The answer is cached now: the handshake itself fails with certificate_revoked.
    with pytest.raises(ssl.SSLError, match="(?i)revoked"):
        ctx = ssl.create_default_context(cafile=world.pki.ca_pem)
        ctx.load_cert_chain(str(world.certs["mallory"].cert_path), str(world.certs["mallory"].key_path))
        with socket.create_connection(("127.0.0.1", need.port), 5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                s.recv(100)
    assert _metric(need, "revoked", "responder") == 1 and _metric(need, "revoked", "cache") >= 1
    assert any(a["event"] == "ocsp" and a["decision"] == "revoked" for a in _audit(need))


def test_unknown_is_refused_under_hard(world: World, need: Gateway) -> None:
    assert handshake_refused(need.port, world.certs["nobody"], world.pki.ca_pem)
    wait_for(lambda: "ocsp-unknown" in need.log(), 5, what="ocsp-unknown in the log")


def test_delegated_responder_and_rogue_delegate(world: World, need: Gateway) -> None:
    assert _ok(need, world, "dora")
    assert handshake_refused(need.port, world.certs["rita"], world.pki.ca_pem)
    wait_for(lambda: "ocsp-unauthorized-responder" in need.log(), 5, what="the unauthorized responder")
    assert "is not issued by" in need.log()


def test_unreachable_responder_hard_refuses_soft_accepts(world: World, need: Gateway) -> None:
    assert handshake_refused(need.port, world.certs["dan"], world.pki.ca_pem)
    wait_for(lambda: "ocsp-unreachable" in need.log(), 5, what="ocsp-unreachable in the log")
    assert _ok(need, world, "sam")
    assert _metric(need, "ocsp-unreachable", "responder") >= 2


def test_slow_responder_hits_the_deadline_without_stalling_others(world: World, need: Gateway) -> None:
    results: dict[str, object] = {}

    def slow() -> None:
        t0 = time.monotonic()
        results["refused"] = handshake_refused(need.port, world.certs["sloane"], world.pki.ca_pem)
        results["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=slow)
    th.start()
    # While sloane's check waits on the stopped responder, other handshakes are served.
    wait_for(lambda: _connected_to(world.responders["slow"].port), 5,
             what="the gateway to connect to the stopped responder")
    assert _ok(need, world, "olga") and _ok(need, world, "alice")
    assert th.is_alive(), "the other clients were served only after the slow check ended"
    th.join(15)
    assert results["refused"] is True
    assert OCSP_TIMEOUT * 0.9 <= float(results["elapsed"]) < 5  # type: ignore[arg-type]  # < handshake_timeout
    wait_for(lambda: _metric(need, "ocsp-timeout", "responder") >= 1, 5, what="the timeout counted")
    assert "did not answer within 1.5s" in need.log()


def test_bad_signature_stale_replayed_and_broken_answers(world: World, need: Gateway) -> None:
    for cn, code in (("bea", "ocsp-bad-signature"), ("stan", "ocsp-stale"), ("ray", "ocsp-nonce-mismatch"),
                     ("hugo", "ocsp-http-error"), ("lars", "too large")):
        assert handshake_refused(need.port, world.certs[cn], world.pki.ca_pem), cn
        wait_for(lambda: code in need.log(), 5, what=f"{code} in the log")
    # The captured answer is fresh: with nonce = no for its CA it is accepted.
    assert _ok(need, world, "nora")
    assert world.replay.requests.count("replay") == 1


def test_want_mode_explains_on_a_403_page(world: World, want: Gateway) -> None:
    # The page says why in plain words; the reason code and the responder's answer are audited.
    status, _, body = request(want.port, cert=world.certs["mallory"], ca=world.pki.ca_pem,
                              headers={"Accept": "text/html"})
    assert status == 403 and b"it has been revoked" in body
    status, _, body = request(want.port, cert=world.certs["dan"], ca=world.pki.ca_pem)
    assert status == 403 and b"its revocation status cannot be checked right now" in body
    assert _ok(want, world, "sam")  # soft: accepted, with a warning
    assert _ok(want, world, "alice")
    deny = {a["fingerprint"]: a for a in _audit(want) if a["event"] == "gate" and a["decision"] == "deny"}
    assert "ocsp-revoked: OCSP: CN=mallory" in str(deny[world.certs["mallory"].fingerprint]["detail"])
    assert "ocsp-unreachable" in str(deny[world.certs["dan"].fingerprint]["detail"])
