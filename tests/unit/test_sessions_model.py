"""SessionManager against a small reference model, on random event sequences (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from proxy.observe.audit import memory_audit
from proxy.sessions.manager import SessionManager
from proxy.stores.memory import MemoryStore
from tests.reactor_thread import Blocking
from proxy.stores.testing import FakeTunnels, make_config, make_identity

G, L, IDLE, MAX, FRESH = 300, 3600, 1800, 20000, 30
ALICE, MALLORY = b"cert-alice", b"cert-mallory"

ops = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 700)),
    st.tuples(st.just("request"), st.sampled_from(["full", "resumed", "none"]), st.integers(0, 90)),
    st.tuples(st.just("activate"), st.integers(0, 60)),
    st.tuples(st.just("deactivate"), st.integers(0, 60)),
    st.tuples(st.just("other-cert"), st.just(0)),
), min_size=1, max_size=40)


class Model:
    """The rules of DESIGN.md "Trusted sessions", written as plainly as possible."""

    def __init__(self, now: int) -> None:
        self.created = self.proved = self.last_seen = now
        self.long_until = 0
        self.ended = False

    def end_at(self) -> int:
        proof = min(self.long_until, self.proved + L) if self.long_until else self.proved + G
        return min(proof, self.last_seen + IDLE, self.created + MAX)

    def tick(self, now: int) -> None:
        if not self.ended and now >= self.end_at():
            self.ended = True

    def request(self, now: int, proof_at: int | None) -> bool:
        self.tick(now)
        if self.ended:
            return False
        if proof_at is not None:
            self.proved = max(self.proved, min(proof_at, now))
        self.last_seen = now
        if self.long_until:
            self.long_until = max(self.long_until, self.proved + L)
        return True


@settings(max_examples=150, deadline=None)
@given(ops)
def test_manager_follows_the_model(events):
    clock = Clock()
    clock.advance(1000)
    tunnels = FakeTunnels()
    store = Blocking(MemoryStore())
    cfg = make_config({"sessions": {"grace": G, "long_grace": L, "idle_timeout": IDLE, "max_lifetime": MAX,
                                    "presence_interval": FRESH}})
    mgr = Blocking(SessionManager(store.store, clock, cfg.sessions, tunnels, memory_audit(clock.seconds)))
    rec, _ = mgr.open(make_identity("alice", cert=ALICE, handshake_at=1000), "alice", ("tls-cert",), "ip")
    tunnels.live.add(rec.id)
    model = Model(1000)
    for op in events:
        now = int(clock.seconds())
        if op[0] == "advance":
            clock.advance(op[1])
            model.tick(int(clock.seconds()))
        elif op[0] == "request":
            kind, age = op[1], op[2]
            ident = make_identity("alice", cert=ALICE, handshake_at=now - age, presented=kind != "none",
                                  full_handshake=kind == "full")
            ok = mgr.check(rec.id, ident, "ip").ok
            assert ok == model.request(now, now - age if kind == "full" else None)
        elif op[0] in ("activate", "deactivate"):
            age = op[1]
            ident = make_identity("alice", cert=ALICE, handshake_at=now - age)
            fn = mgr.activate_long if op[0] == "activate" else mgr.deactivate_long
            chk = fn(rec.id, ident)
            alive = model.request(now, now - age)
            assert chk.ok == (alive and age <= FRESH), (op, chk)
            if chk.ok:
                model.long_until = model.proved + L if op[0] == "activate" else 0
        else:
            chk = mgr.check(rec.id, make_identity("mallory", cert=MALLORY, handshake_at=now), "ip")
            assert not chk.ok
            model.tick(now)
            model.ended = True
        stored = store.get(rec.id)
        if stored is None:  # an ended session is forgotten TOMBSTONE_SECONDS after it ended
            assert model.ended
            continue
        assert (stored.ended is not None) == model.ended, (op, stored, vars(model))
        if not model.ended:
            assert (stored.proved_at, stored.last_seen) == (model.proved, model.last_seen)
            assert mgr.ends_at(stored)[0] == model.end_at()
            assert tunnels.closed == []
        else:
            assert [c[0] for c in tunnels.closed] == [rec.id]  # closed exactly once, when it ended
