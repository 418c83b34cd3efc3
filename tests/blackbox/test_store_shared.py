"""Two real gateways on one real redis-server: every login step may reach either of them.

- a Cockpit login (real cockpit-ws, TOTP through X-Conversation) whose steps alternate
  between the gateways: the pending prompt lives in Redis, not in the process that asked;
- ``[sessions] max_per_account`` enforced across the gateways (``refuse`` and ``replace``,
  the replaced session's WebSocket closed).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pyotp
import pytest

from proxy.login.passwords import set_password
from proxy.login.totp import TotpSecrets
from tests.harness.client import close_code, request, WsClient
from tests.harness.cockpit import bridge_account, cockpit_auth_ws, cockpit_run
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.redis_server import redis_server  # noqa: F401  (pytest fixture)
from tests.harness.sessions import get, login, session_config
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import monotonic

USER = bridge_account()
PW = "cockpit over two gateways"
SECRET = pyotp.random_base32()


def test_cockpit_login_steps_alternate_between_two_gateways(tmp_path: Path, redis_server) -> None:  # noqa: F811
    redis_server.flush()
    pki = Pki(tmp_path / "pki", clients=(USER, "bob"))
    shared = tmp_path / "shared"  # what both gateways read (as from one config management)
    shared.mkdir()
    set_password(shared / "passwd", USER, PW, n=2 ** 10, r=1)
    TotpSecrets(shared / "totp", shared / "totp.key").store(USER, SECRET, 0.0)
    with cockpit_auth_ws(tmp_path / "cockpit-auth", secret=shared / "certgate.secret", store=redis_server.url) as ws:
        cfgs = []
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            cfgs.append(write_config(d, pki, upstream=ws.base_url, extra={
                "upstream": {"kind": "cockpit"}, "cockpit": {"mode": "bearer"},
                "login": {"required_auth_methods": '[["tls-cert", "password", "totp"]]', "password": "file",
                          "password_file": shared / "passwd", "secret_key": shared / "certgate.secret",
                          "totp_secrets": shared / "totp", "totp_key": shared / "totp.key"},
                "sessions": {"store": redis_server.url}}))
        with Gateway(cfgs[0]) as a, Gateway(cfgs[1]) as b:
            def step(gw: Gateway, headers: dict[str, str]):
                return request(gw.port, "GET", "/cockpit/login", cert=pki.client(USER), ca=pki.ca_pem,
                               headers={"X-Superuser": "none", **headers})

            basic = "Basic " + base64.b64encode(f"{USER}:{PW}".encode()).decode()
            status, headers, body = step(a, {"Authorization": basic})  # A asks for the code ...
            assert status == 401, body
            scheme, nonce, _ = headers["WWW-Authenticate"].split(" ")
            assert scheme == "X-Conversation"
            code = base64.b64encode(pyotp.TOTP(SECRET).now().encode()).decode()
            answer = {"Authorization": f"X-Conversation {nonce} {code}"}
            status, headers, body = step(b, answer)  # ... B receives the answer and completes the login
            assert status == 200, (body, b.log()[-2000:])
            jar = {}
            for v in headers.get_all("Set-Cookie") or []:
                k, _, rest = v.split(";", 1)[0].partition("=")
                jar[k] = rest
            cookies = f"cockpit={jar['cockpit']}; __Host-certgate={jar['__Host-certgate']}"
            # the session opened at B works at A, down to a command on cockpit's socket
            from tests.harness.client import client_context

            out = cockpit_run(f"wss://127.0.0.1:{a.port}/cockpit/socket", f"https://127.0.0.1:{a.port}",
                              {"Cookie": cookies}, ["echo", "two gateways"],
                              ssl_ctx=client_context(pki.client(USER), pki.ca_pem), server_hostname="localhost")
            assert out["output"] == "two gateways\n"
            # the prompt was taken once: neither gateway accepts it again
            assert step(a, answer)[0] == 401 and step(b, answer)[0] == 401
            assert PW not in a.log() + b.log()


@pytest.mark.parametrize("on_limit", ["refuse", "replace"])
def test_max_per_account_holds_across_two_gateways(tmp_path: Path, redis_server, on_limit: str) -> None:  # noqa: F811
    redis_server.flush()
    pki = Pki(tmp_path / "pki")
    limits = {"max_per_account": 1, "on_limit": on_limit}
    with RecordingUpstream() as echo:
        cfg_a = session_config(tmp_path, pki, echo.url, store=redis_server.url, sessions=limits, name="a")
        cfg_b = session_config(tmp_path, pki, echo.url, store=redis_server.url, sessions=limits, name="b")
        with Gateway(cfg_a) as a, Gateway(cfg_b) as b:
            first = login(a.port, pki)
            ws = WsClient(a.port, pki, first)
            try:
                assert ws.echo(b"ping") == b"ping"
                t0 = monotonic()
                status, headers, body = request(
                    b.port, "POST", "/.certgate/api/auth", cert=pki.client("alice"), ca=pki.ca_pem,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                    body=json.dumps({"account": "alice", "password": "correct horse battery staple"}).encode())
                if on_limit == "refuse":
                    assert status == 403 and "maximum number of sessions" in json.loads(body)["message"], body
                    assert get(a.port, pki, first)[0] == 200  # the first session is untouched
                    assert login(b.port, pki, "bob")  # another account is not limited by alice's
                else:
                    assert status == 200, body
                    second = headers["Set-Cookie"].split(";", 1)[0]
                    assert get(b.port, pki, second)[0] == 200
                    assert get(a.port, pki, first)[0] == 401  # the oldest was ended ...
                    frame = ws.next_frame(10)  # ... and its WebSocket at the other gateway closed
                    assert close_code(frame) == 1008 and monotonic() - t0 < 7.5, frame
            finally:
                ws.close()
            audit_b = (tmp_path / "b" / "audit.jsonl").read_text()  # the gateway that took the new login
            assert ('"session-limit"' if on_limit == "refuse" else '"replaced-by-newer-login"') in audit_b
