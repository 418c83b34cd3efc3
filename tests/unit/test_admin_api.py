"""Admin API: health (degraded on a failed trust reload), metrics, session list and revoke, token."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from proxy.ops.admin import AdminAPI, admin_service, read_token
from proxy.observe.audit import memory_audit
from proxy.observe.metrics import Metrics
from proxy.sessions.manager import SessionManager
from proxy.stores.interface import StoreError
from proxy.stores.memory import MemoryStore
from twisted.internet.defer import fail
from tests.reactor_thread import Blocking, resolve
from proxy.stores.testing import FakeTunnels, make_config, make_identity

TOKEN = "s3cret-token-0123456789"


class Env:
    def __init__(self, token=None, store=None):
        self.clock = Clock()
        self.clock.advance(10_000)
        self.metrics = Metrics()
        self.tunnels = FakeTunnels()
        raw = store or MemoryStore()
        self.store = Blocking(raw)
        self.mgr = SessionManager(raw, self.clock, make_config().sessions, self.tunnels,
                                  memory_audit(), metrics=self.metrics)
        self.sessions = Blocking(self.mgr)
        self.health_state = (True, None)
        self.api = AdminAPI(sessions=self.mgr, metrics=self.metrics, health=lambda: self.health_state,
                            token=token)

    def login(self, account="alice", cert=b"cert-alice"):
        rec, _ = self.sessions.open(make_identity(account, cert=cert, handshake_at=self.clock.seconds()), account,
                                    ("tls-cert",), "192.0.2.5")
        self.tunnels.live.add(rec.id)
        return rec

    def call(self, method, path, auth=None):
        r = resolve(self.api.handle(method, path, auth))
        return r.status, (json.loads(r.body) if r.content_type == b"application/json" else r.body)


def test_health_ok_and_degraded_after_a_failed_reload():
    e = Env()
    assert e.call(b"GET", b"/health") == (200, {"status": "ok"})
    e.health_state = (False, "trust.d/ca.pem: not a PEM certificate")
    status, body = e.call(b"GET", b"/health")
    assert status == 200 and body["status"] == "degraded"
    assert "trust.d/ca.pem: not a PEM certificate" in body["problems"][0]
    assert e.call(b"GET", b"/health?strict=1")[0] == 503


def test_health_reports_an_unreachable_store():
    class Down(MemoryStore):
        def ping(self):
            return fail(StoreError("redis store redis://127.0.0.1:1/0: ConnectionError"))

    e = Env(store=Down())
    status, body = e.call(b"GET", b"/health")
    assert body["status"] == "degraded" and "session store unreachable" in body["problems"][0]


def test_metrics_text():
    e = Env()
    e.login()
    status, body = e.call(b"GET", b"/metrics")
    assert status == 200
    text = body.decode()
    assert "# TYPE certgate_sessions_opened_total counter" in text
    assert "certgate_sessions_opened_total 1" in text and "certgate_sessions_tracked 1" in text


def test_list_and_revoke_sessions():
    e = Env()
    a = e.login("alice")
    b = e.login("bob", cert=b"cert-bob")
    status, body = e.call(b"GET", b"/sessions")
    assert status == 200
    rows = {r["account"]: r for r in body["sessions"]}
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"]["ends_at"] == "1970-01-01T02:51:40.000Z" and rows["alice"]["state"] == "live"
    assert rows["alice"]["client_ip"] == "192.0.2.5" and rows["alice"]["trusted"] is False
    assert "cert_der" not in rows["alice"]
    assert e.call(b"DELETE", b"/sessions/" + a.id[:4].encode())[0] == 400  # prefix too short
    assert e.call(b"DELETE", b"/sessions/" + b"f" * 12)[0] == 404
    status, body = e.call(b"DELETE", b"/sessions/" + a.id[:10].encode())
    assert status == 200 and body == {"revoked": 1, "ids": [a.id]}
    assert e.tunnels.closed == [(a.id, 1008, "admin-revoke")]
    status, body = e.call(b"DELETE", b"/sessions?account=bob")
    assert body == {"revoked": 1} and e.store.get(b.id).ended == "admin-revoke"
    assert e.call(b"GET", b"/sessions")[1]["sessions"] == []
    assert len(e.call(b"GET", b"/sessions?all=1")[1]["sessions"]) == 2
    assert e.call(b"DELETE", b"/sessions")[0] == 400
    assert e.call(b"PUT", b"/sessions")[0] == 405
    assert e.call(b"GET", b"/nope")[0] == 404


def test_ambiguous_prefix_is_refused():
    e = Env()
    e.store.create(e.login().with_(id="abcdef12" + "0" * 56))
    e.store.create(e.login().with_(id="abcdef12" + "1" * 56))
    assert e.call(b"DELETE", b"/sessions/abcdef12")[0] == 409


def test_token_protects_everything_but_health():
    e = Env(token=TOKEN)
    assert e.call(b"GET", b"/health")[0] == 200
    for path in (b"/metrics", b"/sessions"):
        assert e.call(b"GET", path)[0] == 401
        assert e.call(b"GET", path, b"Bearer wrong")[0] == 401
        assert e.call(b"GET", path, b"Basic " + TOKEN.encode())[0] == 401
        assert e.call(b"GET", path, b"Bearer " + TOKEN.encode())[0] == 200


def test_read_token_and_service_refuses_public_address_without_token(tmp_path):
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ValueError, match="shorter than 16"):
        read_token(tmp_path / "short")
    with pytest.raises(ValueError, match="cannot read"):
        read_token(tmp_path / "missing")
    (tmp_path / "tok").write_text(TOKEN + "\n")
    assert read_token(tmp_path / "tok") == TOKEN
    e = Env()
    gw = SimpleNamespace(parts={"sessions": e.sessions, "metrics": e.metrics})
    cfg = make_config({"admin": {"address": "0.0.0.0", "port": 9999}})
    with pytest.raises(ValueError, match="not a loopback address"):
        admin_service(cfg, gw, Clock())
    cfg = make_config({"admin": {"address": "0.0.0.0", "port": 9999, "token_file": tmp_path / "tok"}})
    assert admin_service(cfg, gw, Clock()).name == "admin"


def test_refused_handshakes_are_summed_per_source_and_reason() -> None:
    """A flood of refusals gives one audit record per (source, reason) per interval, bounded in number."""
    from twisted.internet.task import Clock

    from proxy.observe.audit import RefusalDigest, memory_audit

    clock = Clock()
    clock.advance(1_800_000_000)
    audit = memory_audit(clock.seconds)
    digest = RefusalDigest(audit, clock, interval=60, max_keys=3)
    digest.start()
    for i in range(1000):
        digest.add("192.0.2.1", "untrusted-issuer")
    digest.add("192.0.2.2", "expired")
    for i in range(50):
        digest.add(f"198.51.100.{i}", "untrusted-issuer")
    assert audit.records == []
    clock.advance(60)
    recs = audit.records
    assert recs is not None and len(recs) == 4
    by = {(r["client_ip"], r["reason"]): r["count"] for r in recs}
    assert by[("192.0.2.1", "untrusted-issuer")] == 1000 and by[("192.0.2.2", "expired")] == 1
    assert by[("198.51.100.0", "untrusted-issuer")] == 1 and by[("*", "untrusted-issuer")] == 49
    assert all(r["event"] == "tls-handshake" and r["decision"] == "deny" for r in recs)
    assert recs[0]["time"] == "2027-01-15T08:01:00.000Z" and recs[0]["first"].endswith("Z")
    clock.advance(60)
    assert len(audit.records) == 4  # nothing new, nothing written
    digest.stop()


def test_every_certgate_json_error_has_the_one_shape() -> None:
    """{"error": code (str), "message": text (str)} from admin, session endpoints, login API, gate."""
    import json

    from proxy.login.api import error as api_error
    from proxy.http.messages import error_json
    from proxy.sessions.presence import _login_401, _method_not_allowed

    bodies = [json.loads(api_error(401, "nope").body), json.loads(error_json(503, "later").body),
              json.loads(_method_not_allowed(b"GET").body)]
    class _S:
        def clear_cookie_headers(self) -> list:
            return []
    bodies.append(json.loads(_login_401("session-ended", _S()).body))  # type: ignore[arg-type]
    from proxy.ops.admin import AdminAPI

    api = AdminAPI(sessions=None, metrics=None, health=lambda: (True, None), token="t" * 20)
    for method, path in ((b"GET", b"/sessions"), (b"GET", b"/nowhere")):
        bodies.append(json.loads(resolve(api.handle(method, path, b"Bearer " + b"t" * 20 if path == b"/nowhere" else None)).body))
    for b in bodies:
        assert isinstance(b["error"], str) and isinstance(b["message"], str) and b["message"], b
