"""POST /.certgate/api/auth: single- and multi-step JSON login, Keystone shapes, errors."""

import json

import pyotp
import pytest

from tests.reactor_thread import resolve
from proxy.login.endpoints import login_endpoints
from proxy.login.testing import head, make_rig
from proxy.login.totp import TotpSecrets
from proxy.http.messages import Local, Response

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
JSON = (b"Content-Type", b"application/json")


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path)
    r.set_password("alice", "alice-pw")
    return r


def call(rig, body, conn=None, headers=(JSON,), method=b"POST"):
    ep = login_endpoints(rig.login)["/.certgate/api/auth"]
    h = head(method, b"/.certgate/api/auth", list(headers))
    conn = conn or rig.conn("alice")
    d = ep(h, conn)
    if isinstance(d, Response):
        return d
    assert isinstance(d, Local) and d.max_body == 16384
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    res = d.handler(h, raw, conn)
    if isinstance(res, Response):
        return res
    out = []
    res.addBoth(out.append)
    assert out and isinstance(out[0], Response), out
    return out[0]


def hdr(resp, name):
    return [v for k, v in resp.headers if k.lower() == name.lower().encode()]


def body(resp):
    return json.loads(resp.body)


def test_single_step_200_with_cookie(rig):
    r = call(rig, {"account": "alice", "password": "alice-pw"})
    assert r.status == 200
    b = body(r)
    assert b["account"] == "alice" and b["methods"] == ["tls-cert", "password"]
    assert b["session"]["expires_at"].endswith("Z")
    cookie = hdr(r, "Set-Cookie")[0]
    assert cookie.startswith(b"__Host-certgate=") and b"HttpOnly" in cookie and b"SameSite=Strict" in cookie


def test_multi_step_with_receipt_header(rig):
    TotpSecrets(rig.folder / "totp", rig.folder / "totp.key").store("alice", SECRET, 0)
    r1 = call(rig, {"account": "alice", "password": "alice-pw"})
    assert r1.status == 401 and not hdr(r1, "WWW-Authenticate") and not hdr(r1, "Set-Cookie")
    receipt = hdr(r1, "Certgate-Auth-Receipt")[0]
    b = body(r1)
    assert b["receipt"]["methods"] == ["tls-cert", "password"] and b["receipt"]["account"] == "alice"
    assert b["receipt"]["expires_at"].endswith("Z")
    assert b["required_auth_methods"] == [["tls-cert", "password", "totp"]]
    code = pyotp.TOTP(SECRET).at(rig.clock.seconds())
    r2 = call(rig, {"account": "alice", "totp": code}, headers=(JSON, (b"Certgate-Auth-Receipt", receipt)))
    assert r2.status == 200 and body(r2)["methods"] == ["tls-cert", "password", "totp"]
    # reused receipt: uniform 401
    rig.clock.advance(30)
    code = pyotp.TOTP(SECRET).at(rig.clock.seconds())
    r3 = call(rig, {"account": "alice", "totp": code}, headers=(JSON, (b"Certgate-Auth-Receipt", receipt)))
    assert r3.status == 401 and body(r3)["error"] == "unauthorized"


def test_uniform_failure_body(rig):
    r1 = call(rig, {"account": "alice", "password": "wrong"})
    r2 = call(rig, {"account": "ghost", "password": "wrong"}, conn=rig.conn("ghost"))
    assert r1.status == r2.status == 401
    assert body(r1) == body(r2) == {"error": "unauthorized", "message": body(r1)["message"]}
    assert hdr(r1, "WWW-Authenticate") == [b'Certgate realm="certgate"']


def test_throttled_429_retry_after(rig):
    for _ in range(5):
        call(rig, {"account": "alice", "password": "wrong"})
    r = call(rig, {"account": "alice", "password": "alice-pw"})
    assert r.status == 429 and hdr(r, "Retry-After") == [b"900"]


def test_maxstartups_503(tmp_path):
    rig = make_rig(tmp_path, {"max_startups": (1, 100, 1)})
    rig.set_password("alice", "pw")
    slot = resolve(rig.login.startups.try_acquire())
    assert slot  # one login pending
    r = call(rig, {"account": "alice", "password": "pw"})
    assert r.status == 503 and hdr(r, "Retry-After") == [b"1"]
    resolve(rig.login.startups.release(slot))
    assert call(rig, {"account": "alice", "password": "pw"}).status == 200
    assert rig.login.startups.pending == 0


@pytest.mark.parametrize("raw,msg", [
    (b"{", "not JSON"), (b"[]", "JSON object"), (b'{"account": 1}', "'account' must be a string"),
    (b'{"account": "alice", "role": "admin"}', "unknown field 'role'"), (b"{}", "'account' is required"),
    (b"\xff", "not UTF-8"),
])
def test_bad_bodies_400(rig, raw, msg):
    r = call(rig, raw)
    assert r.status == 400 and body(r)["error"] == "bad-request" and msg in body(r)["message"]


def test_method_content_type_and_cross_site(rig):
    assert call(rig, {}, method=b"GET").status == 405
    assert call(rig, {}, headers=((b"Content-Type", b"text/plain"),)).status == 415
    r = call(rig, {}, headers=(JSON, (b"Origin", b"https://evil.example"), (b"Host", b"gw.example")))
    assert r.status == 403
    r = call(rig, {}, headers=(JSON, (b"Sec-Fetch-Site", b"cross-site")))
    assert r.status == 403
    ok = call(rig, {"account": "alice", "password": "alice-pw"},
              headers=(JSON, (b"Origin", b"https://gw.example"), (b"Host", b"gw.example")))
    assert ok.status == 200


def test_factor_skipping_without_step_one(rig):
    """AUTH-07: step 2 alone (TOTP only, no receipt) does not log an enrolled user in."""
    TotpSecrets(rig.folder / "totp", rig.folder / "totp.key").store("alice", SECRET, 0)
    r = call(rig, {"account": "alice", "totp": pyotp.TOTP(SECRET).at(rig.clock.seconds())})
    assert r.status == 401 and body(r)["required_auth_methods"] == [["tls-cert", "password", "totp"]]
    assert not hdr(r, "Set-Cookie")


def test_async_password_check_runs_in_thread(tmp_path):
    """With a thread runner the scrypt work leaves the caller's thread; the result is the same."""
    import threading

    from twisted.internet.defer import succeed

    seen = []

    def runner(f, *a):
        seen.append(threading.current_thread().name)
        return succeed(f(*a))

    rig = make_rig(tmp_path)
    rig.set_password("alice", "pw")
    rig.login._defer_to_thread = runner
    r = call(rig, {"account": "alice", "password": "pw"})
    assert r.status == 200 and len(seen) == 1


def test_login_duration_histogram_by_result(rig):
    from proxy.observe.metrics import Metrics

    m = Metrics()
    rig.login.use_metrics(m)
    assert call(rig, {"account": "alice", "password": "wrong"}).status == 401
    assert call(rig, {"account": "alice", "password": "alice-pw"}).status == 200
    count = "certgate_login_duration_seconds_count"
    assert m.registry.get_sample_value(count, {"result": "refused"}) == 1
    assert m.registry.get_sample_value(count, {"result": "ok"}) == 1
