"""The real `certgate cockpit-auth` command run by a REAL cockpit-ws (Debian's 287 here).

No gateway in between: the test mints assertions with the config's key, as the gateway does,
and talks HTTP/WebSocket to cockpit-ws directly.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from proxy.frontdoors.assertion import assertion_key, mint_assertion
from proxy.login.keys import load_secret
from tests.harness.cockpit import bridge_account, cockpit_run, write_cockpit_auth_config
from tests.harness.cockpit_ws import CockpitWs
from tests.harness.gateway import CERTGATE

FP = "cd" * 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CockpitWs, bytes]]:
    folder = tmp_path_factory.mktemp("cockpit-auth")
    cfg = write_cockpit_auth_config(folder)
    key = assertion_key(load_secret(folder / "certgate.secret"))
    with CockpitWs([CERTGATE, "cockpit-auth", "--config", str(cfg)]) as ws:
        yield ws, key


def login(ws: CockpitWs, authorization: str) -> tuple[int, str, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", ws.port, timeout=30)
    try:
        c.request("GET", "/cockpit/login", headers={"Authorization": authorization, "X-Superuser": "none"})
        r = c.getresponse()
        return r.status, r.reason, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def token(key: bytes, account: str, *, now: float | None = None, lifetime: float = 30) -> str:
    return mint_assertion(key, account=account, fingerprint=FP, now=time.time() if now is None else now,
                          lifetime=lifetime)


def test_assertion_login_then_websocket_runs_a_command(setup) -> None:
    ws, key = setup
    user = bridge_account()
    tok = token(key, user)
    status, reason, headers, body = login(ws, "Bearer " + tok)
    assert status == 200, (status, reason, ws.log()[-3000:])
    cookie = headers["set-cookie"].split(";", 1)[0]
    assert cookie.startswith("cockpit=")
    data = json.loads(body)
    assert data["login-data"]["certgate-account"] == user and data["login-data"]["certgate-fingerprint"] == FP
    run = cockpit_run(f"ws://127.0.0.1:{ws.port}/cockpit/socket", ws.origin, {"Cookie": cookie}, ["id", "-un"])
    assert run["subprotocol"] == "cockpit1" and run["init"]["version"] == 1
    assert run["output"].strip() == user
    assert any(c.get("command") == "close" and c.get("exit-status") == 0 for c in run["controls"])
    assert tok not in ws.log()  # the command never logs the assertion

    # single use, across processes: the id was consumed in the sqlite store
    status, reason, _, _ = login(ws, "Bearer " + tok)
    assert (status, reason) == (401, "Authentication failed")
    assert "reason=assertion-reused" in ws.log()


def test_refusals_map_to_cockpit_problems(setup, tmp_path: Path) -> None:
    ws, key = setup
    user = bridge_account()
    assert login(ws, "Bearer " + token(key, user, now=time.time() - 120))[:2] == (401, "Authentication failed")
    assert "reason=assertion-expired" in ws.log()
    assert login(ws, "Bearer " + token(assertion_key(b"k" * 32), user))[0] == 401
    assert "reason=assertion-bad-signature" in ws.log()
    assert login(ws, "Bearer not-an-assertion")[0] == 401
    # a valid assertion for an account without a local user: access-denied -> 403 with the reason
    status, reason, _, _ = login(ws, "Bearer " + token(key, "no-such-user-certgate"))
    assert status == 403 and "no local user" in reason
    # cockpit's own disallowed-users (root on Debian)
    status, reason, _, _ = login(ws, "Bearer " + token(key, "root"))
    assert status == 403 and "disallowed" in reason
    # Basic never reaches PAM in this cockpit.conf
    assert login(ws, "Basic bm9ib2R5Og==")[0] == 401


def test_missing_secret_key_fails_closed(tmp_path: Path) -> None:
    cfg = write_cockpit_auth_config(tmp_path / "nokey")
    (tmp_path / "nokey" / "certgate.secret").unlink()
    with CockpitWs([CERTGATE, "cockpit-auth", "--config", str(cfg)]) as ws:
        status, reason, _, _ = login(ws, "Bearer " + mint_assertion(b"x" * 32, account="nobody", fingerprint=FP,
                                                                    now=time.time(), lifetime=30))
        assert status == 401, reason
        assert "problem=authentication-unavailable" in ws.log() and "secret_key" in ws.log()


def test_memory_store_refused_for_single_use(tmp_path: Path) -> None:
    cfg = write_cockpit_auth_config(tmp_path / "mem", store="memory")
    key = assertion_key(load_secret(tmp_path / "mem" / "certgate.secret"))
    with CockpitWs([CERTGATE, "cockpit-auth", "--config", str(cfg)]) as ws:
        assert login(ws, "Bearer " + token(key, bridge_account()))[0] == 401
        assert "memory cannot mark an assertion used" in ws.log()
