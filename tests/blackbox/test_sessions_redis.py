"""Two real gateway processes sharing a real redis-server serve one trusted session."""

from __future__ import annotations

import json

import pytest

from tests.harness.client import close_code, request, WsClient
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.redis_server import redis_server  # noqa: F401  (pytest fixture)
from tests.harness.sessions import get, login, session_config
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import monotonic


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


def test_two_gateways_share_one_session_through_redis(tmp_path, pki, redis_server):  # noqa: F811
    redis_server.flush()
    with RecordingUpstream() as echo:
        cfg_a = session_config(tmp_path, pki, echo.url, store=redis_server.url, sessions={"grace": 30}, name="a")
        cfg_b = session_config(tmp_path, pki, echo.url, store=redis_server.url, sessions={"grace": 30}, name="b")
        with Gateway(cfg_a) as a, Gateway(cfg_b) as b:
            cookie = login(a.port, pki)  # logged in at A ...
            status, _, body = get(b.port, pki, cookie)  # ... served by B
            assert status == 200, body
            assert [v for k, v in json.loads(body)["headers"] if k.lower() == "x-remote-user"] == ["alice"]

            # a proof made at B is what A sees
            _, _, info_a = get(a.port, pki, cookie, "/.certgate/api/session", cert=False)
            before = json.loads(info_a)["proved_at"]
            status, _, _ = get(b.port, pki, cookie, "/.certgate/presence")
            assert status == 200
            _, _, info_a = get(a.port, pki, cookie, "/.certgate/api/session", cert=False)
            assert json.loads(info_a)["proved_at"] > before

            # a WebSocket at A closes when the session is ended at B (logout), within A's sweep
            ws = WsClient(a.port, pki, cookie)
            try:
                assert ws.echo(b"ping") == b"ping"
                t0 = monotonic()
                status, headers, body = request(b.port, "POST", "/.certgate/logout", cert=pki.client("alice"),
                                                ca=pki.ca_pem, headers={"Cookie": cookie, "Accept": "application/json"})
                assert status == 200 and json.loads(body)["logged_out"] is True
                assert get(a.port, pki, cookie)[0] == 401  # A's very next request
                frame = ws.next_frame(10)
                assert close_code(frame) == 1008 and monotonic() - t0 < 7.5, frame
            finally:
                ws.close()
