"""SessionManager: every transition of a trusted session, driven by a fake clock."""

from __future__ import annotations

import hashlib
import re

import pytest
from twisted.internet.task import Clock

from proxy.observe.audit import memory_audit
from proxy.http.messages import RequestHead
from proxy.observe.metrics import Metrics
from proxy.sessions.manager import SessionManager, session_id_for
from proxy.stores.memory import MemoryStore
from tests.harness.config import make_config
from tests.harness.fakes import FakeTunnels, make_identity
from tests.harness.reactor_thread import Blocking, resolve


def SQLiteStore(path):  # noqa: N802  (the SQLite engine, run at once: these tests drive a fake clock)
    from proxy.stores.asynchronous import ImmediateStore
    from proxy.stores.sqlite import SQLiteEngine

    return Blocking(ImmediateStore(SQLiteEngine(path), "sqlite store"))

ALICE = b"cert-alice"
MALLORY = b"cert-mallory"


class World:
    """A manager with a fake clock, a memory store, fake tunnels and an in-memory audit."""

    def __init__(self, store=None, clock=None, **sessions):
        self.clock = clock or Clock()
        raw = store.store if isinstance(store, Blocking) else (store if store is not None else MemoryStore())
        self.store = Blocking(raw)
        self.tunnels = FakeTunnels()
        self.audit = memory_audit(self.clock.seconds)
        self.metrics = Metrics()
        self.settings = make_config({"sessions": sessions}).sessions
        self.mgr = Blocking(SessionManager(raw, self.clock, self.settings, self.tunnels, self.audit,
                                  metrics=self.metrics))

    def at(self, t: float) -> None:
        self.clock.advance(t - self.clock.seconds())

    def login(self, handshake_at: float | None = None, account: str = "alice"):
        hs = self.clock.seconds() if handshake_at is None else handshake_at
        rec, cookies = self.mgr.open(make_identity(account, cert=ALICE, handshake_at=hs), account,
                                     ("tls-cert", "password"), "192.0.2.1")
        self.tunnels.live.add(rec.id)
        return rec, cookies

    def req(self, sid, *, cert=ALICE, hs=None, presented=True, full=True, activity=True, ok=True):
        ident = make_identity("alice" if cert == ALICE else "mallory", cert=cert, presented=presented,
                              handshake_at=self.clock.seconds() if hs is None else hs, full_handshake=full, ok=ok)
        return self.mgr.check(sid, ident, "192.0.2.1", activity=activity)

    def closed_ids(self):
        return [c[0] for c in self.tunnels.closed]


def test_open_sets_a_host_session_cookie_and_stores_only_a_hash():
    w = World()
    rec, cookies = w.login()
    assert len(cookies) == 1
    name, value = cookies[0]
    assert name == b"Set-Cookie"
    text = value.decode()
    m = re.fullmatch(r"__Host-certgate=([A-Za-z0-9_-]{43}); Path=/; Secure; HttpOnly; SameSite=Strict", text)
    assert m, text
    token = m.group(1)
    assert rec.id == hashlib.sha256(token.encode()).hexdigest() == session_id_for(token)
    assert "expires" not in text.lower() and "max-age" not in text.lower()
    assert token not in repr(w.store.list()) and token not in repr(w.audit.records)
    assert rec.fingerprint == hashlib.sha256(ALICE).hexdigest() and rec.cert_der == ALICE
    assert rec.chain_der == (b"ca",)
    head = RequestHead(b"GET", b"/", b"1.1", [(b"Cookie", f"a=b; __Host-certgate={token}".encode())])
    assert w.mgr.session_id(head) == rec.id
    # a new id at every login
    rec2, cookies2 = w.login()
    assert rec2.id != rec.id and cookies2 != cookies
    assert w.audit.records[0]["event"] == "session" and w.audit.records[0]["decision"] == "open"
    assert w.metrics.value("sessions_opened_total") == 2


def test_session_id_refuses_malformed_or_duplicated_cookies():
    w = World()
    good = "A" * 43
    for cookie in (b"__Host-certgate=short", b"__Host-certgate=" + b"A" * 44, b"__Host-certgate=" + b"!" * 43,
                   b"certgate=" + good.encode(), ("__Host-certgate=%s; __Host-certgate=%s" % (good, good)).encode()):
        assert w.mgr.session_id(RequestHead(b"GET", b"/", b"1.1", [(b"Cookie", cookie)])) is None, cookie
    assert w.mgr.session_id(RequestHead(b"GET", b"/", b"1.1", [])) is None


def test_open_requires_a_valid_certificate():
    w = World()
    with pytest.raises(ValueError, match="valid client certificate"):
        w.mgr.open(make_identity(presented=False), "alice", ("password",), "192.0.2.1")
    with pytest.raises(ValueError):
        w.mgr.open(make_identity("alice", ok=False), "alice", ("password",), "192.0.2.1")
    assert w.store.list() == []


def test_proof_moves_only_on_a_full_handshake_with_the_same_certificate():
    w = World()
    rec, _ = w.login(handshake_at=0.0)
    w.at(100)
    assert w.req(rec.id, hs=80).record.proved_at == 80          # handshake time, not request time
    w.at(120)
    assert w.req(rec.id, hs=50).record.proved_at == 80          # never backwards
    assert w.req(rec.id, hs=110, full=False).record.proved_at == 80  # resumed: no proof
    assert w.req(rec.id, presented=False).record.proved_at == 80     # no certificate: no proof
    assert w.req(rec.id, hs=500).record.proved_at == 120        # never later than now
    assert w.store.get(rec.id).proved_at == 120


def test_grace_300_without_certificate_then_end_and_websockets_closed():
    w = World()
    rec, _ = w.login()
    w.at(299.9)
    chk = w.req(rec.id, presented=False)
    assert chk.ok
    assert w.tunnels.closed == []
    w.at(300)  # the timer fires at proved_at + grace, with no request at all
    assert w.tunnels.closed == [(rec.id, 1008, "grace-expired")]
    assert w.store.get(rec.id).ended == "grace-expired"
    chk = w.req(rec.id)  # even with the right certificate, it is over
    assert not chk.ok and chk.reason == "session-ended" and chk.ended == "grace-expired"
    ends = [r for r in w.audit.records if r["decision"] == "end"]
    assert [r["reason"] for r in ends] == ["grace-expired"]
    assert w.metrics.value("sessions_ended_total", "grace-expired") == 1


def test_check_itself_ends_an_expired_session_before_any_timer():
    w = World()
    rec, _ = w.login()
    w.mgr.stop()  # no timers: check() alone must enforce the deadline
    w.clock.advance(300)
    chk = w.req(rec.id, hs=300)  # a proof arriving after the end does not revive it
    assert not chk.ok and chk.reason == "grace-expired"
    assert w.store.get(rec.id).ended == "grace-expired"


def test_timer_rearmed_when_the_proof_moves():
    w = World()
    rec, _ = w.login()
    w.at(200)
    assert w.req(rec.id).ok  # proof at 200 -> ends at 500
    w.at(499)
    assert w.tunnels.closed == []
    w.at(500)
    assert w.closed_ids() == [rec.id]


def test_long_trusted_session_needs_a_fresh_proof_and_lasts_3600s():
    w = World(idle_timeout=86400)
    rec, _ = w.login()
    w.at(100)
    # handshake 100 s old: not fresh (presence_interval = 30)
    chk = w.mgr.activate_long(rec.id, make_identity("alice", cert=ALICE, handshake_at=0))
    assert not chk.ok and chk.reason == "fresh-proof-required"
    chk = w.mgr.activate_long(rec.id, make_identity(presented=False, handshake_at=100))
    assert not chk.ok and chk.reason == "fresh-proof-required"
    assert w.store.get(rec.id).long_until == 0.0
    chk = w.mgr.activate_long(rec.id, make_identity("alice", cert=ALICE, handshake_at=95))
    assert chk.ok and chk.record.long_until == 95 + 3600 and chk.record.proved_at == 95
    assert w.audit.records[-1]["reason"] == "long-session-activated"
    w.at(95 + 3599)  # card pulled since 95: still alive
    assert w.req(rec.id, presented=False).ok
    w.at(95 + 3600)
    assert w.tunnels.closed == [(rec.id, 1008, "long-grace-expired")]


def test_long_session_follows_later_proofs_and_can_be_deactivated():
    w = World()
    rec, _ = w.login()
    assert w.mgr.activate_long(rec.id, make_identity("alice", cert=ALICE, handshake_at=0)).ok
    w.at(1000)
    assert w.req(rec.id).record.long_until == 1000 + 3600  # each proof extends the long window
    w.at(1010)
    chk = w.mgr.deactivate_long(rec.id, make_identity("alice", cert=ALICE, handshake_at=1005))
    assert chk.ok and chk.record.long_until == 0.0 and chk.record.proved_at == 1005
    w.at(1005 + 299)
    assert w.tunnels.closed == []
    w.at(1005 + 300)
    assert w.tunnels.closed == [(rec.id, 1008, "grace-expired")]


def test_other_certificate_is_refused_audited_and_ends_the_session():
    w = World()
    rec, _ = w.login()
    w.at(10)
    chk = w.req(rec.id, cert=MALLORY)
    assert not chk.ok and chk.reason == "session-cert-mismatch"
    assert w.tunnels.closed == [(rec.id, 1008, "session-cert-mismatch")]
    deny = [r for r in w.audit.records if r["reason"] == "session-cert-mismatch" and r["decision"] == "deny"]
    assert deny and deny[0]["fingerprint"] == hashlib.sha256(MALLORY).hexdigest()
    assert deny[0]["account"] == "alice"
    assert not w.req(rec.id).ok  # the owner must log in again too


def test_invalid_certificate_with_the_same_fingerprint_ends_the_session():
    w = World()
    rec, _ = w.login()
    chk = w.req(rec.id, ok=False)
    assert not chk.ok and chk.reason == "certificate-invalid"
    assert w.store.get(rec.id).ended == "certificate-invalid"


def test_idle_timeout():
    w = World(idle_timeout=600)
    rec, _ = w.login()
    assert w.mgr.activate_long(rec.id, make_identity("alice", cert=ALICE, handshake_at=0)).ok
    w.at(500)
    assert w.req(rec.id, activity=False).ok  # a hidden page's presence ping proves but is not use
    assert w.store.get(rec.id).proved_at == 500
    w.at(599)
    assert w.tunnels.closed == []
    w.at(600)
    assert w.tunnels.closed == [(rec.id, 1008, "idle-timeout")]


def test_max_lifetime_ends_even_a_well_proved_session():
    w = World(max_lifetime=1000)
    rec, _ = w.login()
    for t in range(100, 1000, 100):
        w.at(t)
        assert w.req(rec.id).ok
    w.at(1000)
    assert w.tunnels.closed == [(rec.id, 1008, "max-lifetime")]
    assert w.mgr.ends_at(w.store.get(rec.id)) == (1000, "max-lifetime")


def test_revocation_in_the_store_reaches_check_and_tunnels_within_the_sweep():
    w = World()
    w.mgr.start()
    rec, _ = w.login()
    w.at(10)
    assert w.store.delete_where(account="alice") == [rec.id]  # what `certgate sessions revoke` does
    w.at(14.9)
    assert w.tunnels.closed == []
    w.at(15)  # sweep every 5 s
    assert w.tunnels.closed == [(rec.id, 1008, "session-revoked")]
    chk = w.req(rec.id)
    assert not chk.ok and chk.reason == "session-unknown"
    w.mgr.stop()


def test_logout_ends_the_session_and_closes_tunnels():
    w = World()
    rec, _ = w.login()
    assert w.mgr.end(rec.id, "logout")
    assert w.tunnels.closed == [(rec.id, 1008, "logout")]
    assert not w.mgr.end(rec.id, "logout")  # already over
    chk = w.req(rec.id)
    assert not chk.ok and chk.ended == "logout"
    w.at(1000)
    assert w.tunnels.closed == [(rec.id, 1008, "logout")] * 2  # end() twice; no timer left behind


def test_end_where_and_revalidate():
    w = World()
    a, _ = w.login(account="alice")
    b, _ = w.login(account="bob")
    c, _ = w.login(account="carol")
    assert w.mgr.end_where(account="bob", reason="admin-revoke") == 1
    assert w.store.get(b.id).ended == "admin-revoke"
    n = w.mgr.revalidate(lambda rec: rec.account != "carol", "trust-reload")
    assert n == 1 and w.store.get(c.id).ended == "trust-reload" and w.store.get(a.id).ended is None

    def boom(rec):
        raise RuntimeError("verify failed")

    assert w.mgr.revalidate(boom, "trust-reload") == 1  # fail closed
    assert w.store.get(a.id).ended == "trust-reload"
    with pytest.raises(ValueError):
        w.mgr.end_where(reason="x")


def test_restart_after_grace_expired_meanwhile_is_dead():
    store = Blocking(MemoryStore())
    w1 = World(store=store)
    rec, _ = w1.login()
    w1.mgr.stop()  # gateway stops at t=0
    clock = Clock()
    clock.advance(301)
    w2 = World(store=store, clock=clock)
    w2.mgr.start()
    assert store.get(rec.id).ended == "grace-expired"
    assert not w2.req(rec.id).ok
    w2.mgr.stop()


def test_restart_inside_grace_keeps_the_session():
    store = Blocking(MemoryStore())
    w1 = World(store=store)
    rec, _ = w1.login()
    w1.mgr.stop()
    clock = Clock()
    clock.advance(299)
    w2 = World(store=store, clock=clock)
    w2.mgr.start()
    assert w2.req(rec.id, presented=False).ok
    w2.at(300)
    assert w2.tunnels.closed == [(rec.id, 1008, "grace-expired")]
    w2.mgr.stop()


def test_two_gateways_sharing_a_store_rearm_from_the_store():
    store = Blocking(MemoryStore())
    clock = Clock()
    a = World(store=store, clock=clock)
    b = World(store=store, clock=clock)
    rec, _ = a.login()
    a.tunnels.live.add(rec.id)
    a.at(200)
    assert b.req(rec.id).ok  # the proof arrives at gateway B
    a.at(300)  # A's timer fires, re-reads the store, sees the proof of B: not ended
    assert a.tunnels.closed == [] and store.get(rec.id).ended is None
    a.at(500)
    assert (rec.id, 1008, "grace-expired") in a.tunnels.closed + b.tunnels.closed
    assert rec.id in a.closed_ids()


def test_clear_cookie_header():
    w = World()
    (name, value), = w.mgr.clear_cookie_headers()
    assert value == b"__Host-certgate=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"


def test_restart_on_sqlite_file_keeps_live_sessions_and_kills_expired_ones(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    w1 = World(store=store)
    w1.at(1000)
    early, _ = w1.login()
    w1.at(1200)
    late, _ = w1.login()
    w1.mgr.stop()
    store.close()  # the gateway process exits at t=1200
    clock = Clock()
    clock.advance(1350)  # back 150 s later: early's grace (1300) ran out meanwhile, late's (1500) did not
    store2 = SQLiteStore(tmp_path / "s.db")
    w2 = World(store=store2, clock=clock)
    w2.mgr.start()
    assert store2.get(early.id).ended == "grace-expired"
    chk = w2.req(early.id)
    assert not chk.ok and chk.ended == "grace-expired"
    assert w2.req(late.id, hs=1340).ok
    assert store2.get(late.id).proved_at == 1340
    w2.mgr.stop()
    store2.close()


def test_certificate_expiry_ends_the_session(tmp_path):
    import datetime as dt

    from trust import issue as I

    ca = I.ca("test CA")
    not_after = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    leaf = I.client(ca, "alice", not_before=not_after - dt.timedelta(days=30), not_after=not_after)
    from cryptography.hazmat.primitives.serialization import Encoding

    der = leaf.cert.public_bytes(Encoding.DER)
    clock = Clock()
    clock.advance(not_after.timestamp() - 100)
    w = World(clock=clock)
    rec, _ = w.mgr.open(make_identity("alice", cert=der, handshake_at=clock.seconds()), "alice", ("tls-cert",),
                        "192.0.2.1")
    assert w.mgr.ends_at(rec) == (not_after.timestamp(), "certificate-expired")
    w.tunnels.live.add(rec.id)
    clock.advance(100)
    assert w.tunnels.closed == [(rec.id, 1008, "certificate-expired")]


def test_ws04_real_tunnel_registry_closed_at_5_minutes_and_1_hour():
    from proxy.http.tunnel import TunnelRegistry

    class Tunnel:
        def __init__(self):
            self.closed = None

        def close(self, code=1008, reason=""):
            self.closed = (code, reason)

    clock = Clock()
    registry = TunnelRegistry()
    mgr = Blocking(SessionManager(MemoryStore(), clock, make_config({"sessions": {"idle_timeout": 86400}}).sessions,
                                  registry, memory_audit(clock.seconds)))
    short, _ = mgr.open(make_identity("alice", cert=ALICE, handshake_at=0), "alice", ("tls-cert",), "ip")
    long_, _ = mgr.open(make_identity("bob", cert=b"cert-bob", handshake_at=0), "bob", ("tls-cert",), "ip")
    assert mgr.activate_long(long_.id, make_identity("bob", cert=b"cert-bob", handshake_at=0)).ok
    t_short, t_long = Tunnel(), Tunnel()
    registry.add(short.id, short.fingerprint, t_short)
    registry.add(long_.id, long_.fingerprint, t_long)
    clock.advance(299)
    assert t_short.closed is None
    clock.advance(1)
    assert t_short.closed == (1008, "grace-expired") and t_long.closed is None
    clock.advance(3599 - 300)
    assert t_long.closed is None
    clock.advance(1)
    assert t_long.closed == (1008, "long-grace-expired") and registry.count() == 0


def test_live_sessions_gauge_counts_the_store():
    """certgate_sessions_live: open sessions that are neither ended nor past their end."""
    from proxy.app.observing import live_sessions

    w = World(grace=300)
    w.at(1000)
    a, _ = w.login()
    w.login(account="bob")
    assert resolve(live_sessions(w.mgr.store, w.clock.seconds())) == 2
    w.mgr.end(a.id, "logout")
    assert resolve(live_sessions(w.mgr.store, w.clock.seconds())) == 1
    assert resolve(live_sessions(w.mgr.store, 1000 + 301)) == 0  # grace passed: expired, not live


def test_checks_wait_for_a_running_revalidation():
    """After a trust reload the revalidation may take a store round trip; a request meanwhile is
    decided after it, so it never rides on a session that is being ended."""
    from twisted.internet.defer import Deferred

    from proxy.stores.memory import MemoryEngine
    from proxy.stores.asynchronous import ImmediateStore

    class Slow(ImmediateStore):
        gate: "Deferred | None" = None

        def list(self):
            d = super().list()
            if self.gate is None:
                return d
            held, self.gate = self.gate, None
            return held.addCallback(lambda _: d)

    store = Slow(MemoryEngine(), "slow store")
    w = World(store=store)
    rec, _ = w.login()
    gate = store.gate = Deferred()
    reval = w.mgr.store.revalidate(lambda r: False, "trust-store-changed")  # the raw manager: not resolved yet
    pending = w.mgr.store.check(rec.id, make_identity(presented=False), "192.0.2.1")
    assert not pending.called  # waits for the revalidation
    gate.callback(None)
    assert resolve(reval) == 1
    chk = resolve(pending)
    assert not chk.ok and chk.reason == "session-ended"
