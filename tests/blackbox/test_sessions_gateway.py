"""Trusted sessions through the real gateway process: presence, WebSockets, restart, CLI revoke, admin."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.harness.client import close_code, WsClient
from tests.harness.gateway import certgate_cli, Gateway
from tests.harness.pki import Pki
from tests.harness.sessions import get, login, session_config
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import free_port, monotonic, pause, wait_for


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def echo():
    with RecordingUpstream() as e:
        yield e


def upstream_user(body: bytes) -> list[str]:
    rec = json.loads(body)
    return [v for k, v in rec["headers"] if k.lower() == "x-remote-user"]


def test_websocket_stays_open_while_the_certificate_is_reproved_and_closes_after(tmp_path, pki, echo):
    grace = 2.0
    cfg = session_config(tmp_path, pki, echo.url, store=f"sqlite:{tmp_path}/s.db", sessions={"grace": grace})
    with Gateway(cfg) as gw:
        cookie = login(gw.port, pki)
        ws = WsClient(gw.port, pki, cookie)
        try:
            assert ws.echo(b"first") == b"first"
            # keep proving: a presence ping on a new connection (full handshake with the certificate)
            start = last_proof = monotonic()
            while monotonic() - start < 3 * grace:
                status, _, body = get(gw.port, pki, cookie, "/.certgate/presence")
                assert status == 200, body
                last_proof = monotonic()
                pause(0.4)
            assert ws.echo(b"still here") == b"still here"  # outlived the grace three times over
            # stop proving (card pulled): the gateway closes the WebSocket at proved_at + grace
            frame = ws.next_frame(grace + 5)
            closed_after = monotonic() - last_proof
            assert close_code(frame) == 1008, frame
            assert grace - 0.6 <= closed_after <= grace + 2.5, closed_after
        finally:
            ws.close()
        status, _, body = get(gw.port, pki, cookie)
        assert status == 401 and json.loads(body)["error"] == "session-ended"
        audit = [json.loads(x) for x in (cfg.parent / "audit.jsonl").read_text().splitlines()]
        assert any(a["event"] == "session" and a["decision"] == "end" and a["reason"] == "grace-expired"
                   for a in audit)


def test_card_pulled_requests_pass_inside_grace_only_and_other_certificate_kills(tmp_path, pki, echo):
    cfg = session_config(tmp_path, pki, echo.url, store=f"sqlite:{tmp_path}/s.db", sessions={"grace": 2})
    with Gateway(cfg) as gw:
        cookie = login(gw.port, pki)
        status, _, body = get(gw.port, pki, cookie, cert=False)  # no certificate (want mode), inside grace
        assert status == 200 and upstream_user(body) == ["alice"]
        assert "__Host-certgate" not in json.dumps(json.loads(body)["headers"])  # the token stays with us
        wait_for(lambda: get(gw.port, pki, cookie, cert=False)[0] == 401, 6, what="grace to run out")
        cookie = login(gw.port, pki)
        status, _, body = get(gw.port, pki, cookie, account="bob")  # bob's certificate, alice's cookie
        assert status == 403 and json.loads(body)["error"] == "session-cert-mismatch"
        assert get(gw.port, pki, cookie)[0] == 401  # the session is over for alice too


def test_session_survives_a_restart_but_not_a_grace_that_ran_out_meanwhile(tmp_path, pki, echo):
    cfg = session_config(tmp_path, pki, echo.url, store="sqlite:state/sessions.db", sessions={"grace": 60},
                         name="long")
    gw = Gateway(cfg).start()
    try:
        cookie = login(gw.port, pki)
        assert get(gw.port, pki, cookie)[0] == 200
    finally:
        gw.stop()
    with Gateway(cfg) as gw:
        status, _, body = get(gw.port, pki, cookie)
        assert status == 200 and upstream_user(body) == ["alice"]

    cfg2 = session_config(tmp_path, pki, echo.url, store="sqlite:state/sessions.db", sessions={"grace": 1},
                          name="short")
    gw = Gateway(cfg2).start()
    try:
        cookie = login(gw.port, pki)
        t_login = monotonic()
    finally:
        gw.stop()
    pause(max(0.0, 1.5 - (monotonic() - t_login)))
    with Gateway(cfg2) as gw:
        status, _, body = get(gw.port, pki, cookie)
        assert status == 401, body
        listed = certgate_cli("sessions", "list", "--config", cfg2, "--all", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [r["state"] for r in rows] == ["ended"] and rows[0]["end_reason"] == "grace-expired"


def test_cli_revocation_reaches_the_running_gateway_and_its_websockets(tmp_path, pki, echo):
    cfg = session_config(tmp_path, pki, echo.url, store="sqlite:sessions.db")
    with Gateway(cfg) as gw:
        cookie = login(gw.port, pki)
        ws = WsClient(gw.port, pki, cookie)
        try:
            assert ws.echo(b"x") == b"x"
            listed = certgate_cli("sessions", "list", "--config", cfg)
            assert listed.returncode == 0, listed.stderr
            lines = listed.stdout.splitlines()
            assert len(lines) == 2 and " alice " in lines[1] and " live" in lines[1]
            session_prefix = lines[1].split()[0]
            t0 = monotonic()
            revoked = certgate_cli("sessions", "revoke", "--config", cfg, session_prefix)
            assert revoked.returncode == 0 and "revoked 1 session(s)" in revoked.stdout, revoked.stderr
            status, _, body = get(gw.port, pki, cookie)  # the very next request sees it
            assert status == 401 and json.loads(body)["error"] == "session-ended"
            frame = ws.next_frame(10)  # the sweep (every 5 s) closes the tunnel
            assert close_code(frame) == 1008 and monotonic() - t0 < 7.5, frame
        finally:
            ws.close()


def test_memory_store_sessions_through_the_admin_api(tmp_path, pki, echo):
    admin_port = free_port()
    cfg = session_config(tmp_path, pki, echo.url, store="memory",
                         extra={"admin": {"port": admin_port}})
    with Gateway(cfg) as gw:
        base = f"http://127.0.0.1:{admin_port}"
        wait_for(lambda: urllib.request.urlopen(base + "/health", timeout=2).status == 200, 10, what="admin")
        cookie = login(gw.port, pki)
        ws = WsClient(gw.port, pki, cookie)
        try:
            listed = certgate_cli("sessions", "list", "--config", cfg, "--json")
            assert listed.returncode == 0, listed.stderr
            rows = json.loads(listed.stdout)
            assert [r["account"] for r in rows] == ["alice"] and rows[0]["fingerprint"] == pki.client("alice").fingerprint
            metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            assert "certgate_sessions_opened_total 1" in metrics
            revoked = certgate_cli("sessions", "revoke", "--config", cfg, "--account", "alice")
            assert revoked.returncode == 0 and "revoked 1" in revoked.stdout, revoked.stderr
            assert close_code(ws.next_frame(5)) == 1008  # same process: closed at once
            assert get(gw.port, pki, cookie)[0] == 401
        finally:
            ws.close()


def test_revoking_the_certificate_by_crl_ends_its_sessions_at_the_reload(tmp_path, pki, echo):
    from cryptography import x509

    from trust import issue as I

    cfg = session_config(tmp_path, pki, echo.url, store="sqlite:sessions.db")
    with Gateway(cfg) as gw:
        alice = login(gw.port, pki)
        bob = login(gw.port, pki, "bob")
        ws = WsClient(gw.port, pki, alice)
        try:
            assert ws.echo(b"x") == b"x"
            serial = x509.load_pem_x509_certificate(pki.client("alice").cert_path.read_bytes()).serial_number
            (pki.store / "test-ca.crl").write_bytes(I.pem(I.crl(pki.ca, [serial])))
            # reload (every 0.5 s): connections carrying the revoked certificate are dropped and its
            # sessions ended; the WebSocket ends either way (close frame or closed connection)
            frame = ws.next_frame(10)
            assert frame is None or close_code(frame) == 1008, frame
        finally:
            ws.close()
        status, _, body = get(gw.port, pki, alice, cert=False)
        assert status == 401 and json.loads(body)["error"] == "session-ended"
        assert get(gw.port, pki, bob, account="bob")[0] == 200  # bob's certificate is still good
        audit = [json.loads(x) for x in (cfg.parent / "audit.jsonl").read_text().splitlines()]
        ends = [a for a in audit if a["event"] == "session" and a["decision"] == "end"]
        assert [(a["account"], a["reason"]) for a in ends] == [("alice", "trust-store-changed")]


def test_long_trusted_session_through_the_api(tmp_path, pki, echo):
    from tests.harness.client import request

    cfg = session_config(tmp_path, pki, echo.url, store="sqlite:sessions.db",
                         sessions={"grace": 1, "long_grace": 30})
    with Gateway(cfg) as gw:
        cookie = login(gw.port, pki)

        def trusted(method):
            return request(gw.port, method, "/.certgate/api/trusted-session", cert=pki.client("alice"),
                           ca=pki.ca_pem, headers={"Cookie": cookie, "Accept": "application/json"})

        status, _, body = trusted("POST")  # a new connection: its handshake is the fresh proof
        assert status == 200 and json.loads(body)["trusted"] is True, body
        pause(1.6)  # past the normal grace, card "pulled"
        status, _, body = get(gw.port, pki, cookie, cert=False)
        assert status == 200 and upstream_user(body) == ["alice"]
        status, _, body = trusted("DELETE")
        assert status == 200 and json.loads(body)["trusted"] is False
        wait_for(lambda: get(gw.port, pki, cookie, cert=False)[0] == 401, 5, what="normal grace to end it")
