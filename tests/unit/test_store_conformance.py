"""One conformance mixin, run against both faces (blocking engine, asynchronous store) of memory,
SQLite and a real redis-server. The asynchronous stores are driven through ``Blocking`` views
(the memory store's Deferreds have fired; SQLite and Redis run on a real reactor thread)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from proxy.stores import StoreError, open_engine, open_store
from proxy.stores.interface import (REPLACED, IBlockingStore, ISessionStore, LimitReached, SessionRecord,
                                    TOMBSTONE_SECONDS)
from proxy.stores.memory import MemoryEngine, MemoryStore
from proxy.stores.redis import RedisEngine, RedisStore
from proxy.stores.redis_target import parse_url
from proxy.stores.sqlite import SQLiteEngine, SQLiteStore
from tests.reactor_thread import Blocking, blocking, reactor_running
from tests.redis_fixture import redis_server  # noqa: F401  (pytest fixture)

T0 = 2_000_000_000.123456789  # realistic epoch times: Redis TTLs are computed from them


def rec(i: int = 1, **kw) -> SessionRecord:
    base = dict(id=f"{i:064x}", account="alice", fingerprint="ab" * 32, cert_der=b"\x30\x82leaf\x00\xff",
                chain_der=(b"inter\x00", b"root\xff"), created_at=T0, proved_at=T0 - 0.5, last_seen=T0,
                long_until=0.0, methods=("tls-cert", "password"), client_ip="2001:db8::1", ended=None)
    base.update(kw)
    return SessionRecord(**base)


class StoreConformance:
    """Tests every ISessionStore must pass. Subclasses define ``store`` (fixture) and ``peer()``."""

    def peer(self, store):
        """Another handle on the same backend (another connection / process view)."""
        raise NotImplementedError

    def test_is_a_store(self, store):
        if isinstance(store, Blocking):
            assert isinstance(store.store, ISessionStore)
        else:
            assert isinstance(store, IBlockingStore)

    def test_limited_create_refuses_or_replaces_the_oldest(self, store):
        store.create(rec(1, created_at=T0))
        store.create(rec(2, created_at=T0 + 1))
        store.create(rec(3, account="bob"))
        store.create(rec(4, ended="logout"))  # tombstones do not count
        with pytest.raises(LimitReached, match="'alice' already has 2"):
            store.create(rec(5, created_at=T0 + 2), limit=2)
        assert store.get(rec(5).id) is None
        assert store.create(rec(5, created_at=T0 + 2), limit=3) == []
        assert store.create(rec(6, created_at=T0 + 3), limit=2, replace=True) == [rec(1).id, rec(2).id]
        assert store.get(rec(1).id).ended == REPLACED and store.get(rec(2).id).ended == REPLACED
        assert store.get(rec(5).id).ended is None and store.get(rec(6).id).ended is None
        assert store.get(rec(3).id).ended is None
        store.delete(rec(5).id)
        assert store.create(rec(7, created_at=T0 + 4), limit=2) == []
        with pytest.raises(StoreError, match="already exists"):
            store.create(rec(7), limit=5)

    def test_concurrent_limited_creates_admit_exactly_the_limit(self, store):
        handles = [store] + [self.peer(store) for _ in range(3)]
        admitted: list[int] = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def worker(i: int) -> None:
            barrier.wait()
            try:
                handles[i % len(handles)].create(rec(100 + i, created_at=T0 + i), limit=3)
            except LimitReached:
                return
            with lock:
                admitted.append(i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(admitted) == 3
        assert len([r for r in store.list() if r.ended is None]) == 3

    def test_stash_is_taken_once_and_expires(self, store):
        store.stash("cockpit", "n1", '{"a": 1}', T0 + 60)
        assert self.peer(store).unstash("cockpit", "n1", T0) == '{"a": 1}'
        assert store.unstash("cockpit", "n1", T0) is None
        store.stash("cockpit", "n2", "x", T0 + 60)
        assert store.unstash("other", "n2", T0) is None
        assert store.unstash("cockpit", "n2", T0 + 61) is None  # expired (Redis: by its own TTL, later)

    def test_slots_are_capped_released_and_expire(self, store):
        assert [store.take_slot("startups", f"s{i}", T0, T0 + 30, 3) for i in range(4)] == [0, 1, 2, -1]
        assert self.peer(store).take_slot("startups", "p", T0, T0 + 30, 3) == -1  # shared by every handle
        store.release_slot("startups", "s1")
        assert store.take_slot("startups", "s4", T0, T0 + 30, 3) == 2
        assert store.take_slot("other", "x", T0, T0 + 30, 3) == 0  # namespaces are separate
        assert store.take_slot("startups", "late", T0 + 30, T0 + 60, 3) == 0  # all expired at T0 + 30

    def test_get_many_and_ping(self, store):
        store.create(rec(1))
        store.create(rec(2, ended="logout"))
        got = store.get_many([rec(1).id, rec(2).id, rec(3).id])
        assert got == {rec(1).id: rec(1), rec(2).id: rec(2, ended="logout"), rec(3).id: None}
        assert store.get_many([]) == {}
        assert store.ping() is None

    def test_create_get_roundtrip_is_exact(self, store):
        r = rec()
        store.create(r)
        assert store.get(r.id) == r
        assert self.peer(store).get(r.id) == r
        assert store.get("0" * 64) is None

    def test_create_twice_is_refused(self, store):
        store.create(rec())
        with pytest.raises(StoreError, match="already exists"):
            store.create(rec(proved_at=T0 + 5))
        assert store.get(rec().id).proved_at == T0 - 0.5

    def test_update_changes_mutable_fields_only(self, store):
        r = rec()
        store.create(r)
        new = store.update(r.id, long_until=T0 + 3600.25, client_ip="192.0.2.7", methods=["tls-cert"])
        assert new == r.with_(long_until=T0 + 3600.25, client_ip="192.0.2.7", methods=("tls-cert",))
        assert store.get(r.id) == new
        assert store.update("f" * 64, ended="x") is None
        with pytest.raises(ValueError, match="'fingerprint' cannot be changed"):
            store.update(r.id, fingerprint="cd" * 32)
        with pytest.raises(ValueError, match="'colour' is not a SessionRecord field"):
            store.update(r.id, colour="red")
        assert store.get(r.id) == new

    def test_touch_only_moves_forward_and_extends_long_sessions(self, store):
        r = rec()
        store.create(r)
        t = store.touch(r.id, proved_at=T0 + 10, last_seen=T0 + 12, client_ip="192.0.2.9", long_grace=3600)
        assert (t.proved_at, t.last_seen, t.client_ip, t.long_until) == (T0 + 10, T0 + 12, "192.0.2.9", 0.0)
        t = store.touch(r.id, proved_at=T0 + 5, last_seen=T0 + 6, client_ip="192.0.2.9", long_grace=3600)
        assert (t.proved_at, t.last_seen) == (T0 + 10, T0 + 12)  # never backwards
        store.update(r.id, long_until=T0 + 100)
        t = store.touch(r.id, proved_at=T0 + 20, last_seen=T0 + 20, client_ip="192.0.2.9", long_grace=3600)
        assert t.long_until == T0 + 20 + 3600
        store.update(r.id, ended="logout")
        t = store.touch(r.id, proved_at=T0 + 30, last_seen=T0 + 30, client_ip="x", long_grace=3600)
        assert t.ended == "logout" and t.proved_at == T0 + 20  # an ended record is not revived
        assert store.touch("e" * 64, proved_at=1, last_seen=1, client_ip="", long_grace=1) is None

    def test_delete_list_delete_where(self, store):
        store.create(rec(1, account="alice", fingerprint="aa" * 32))
        store.create(rec(2, account="alice", fingerprint="bb" * 32))
        store.create(rec(3, account="bob", fingerprint="bb" * 32))
        store.create(rec(4, account="carol", fingerprint="cc" * 32))
        assert sorted(r.id for r in store.list()) == [rec(i).id for i in (1, 2, 3, 4)]
        assert store.delete(rec(4).id) is True and store.delete(rec(4).id) is False
        assert sorted(store.delete_where(account="alice", fingerprint="bb" * 32)) == [rec(2).id]
        assert sorted(store.delete_where(fingerprint="bb" * 32)) == [rec(3).id]
        assert store.delete_where(account="alice") == [rec(1).id]
        assert store.list() == []
        with pytest.raises(ValueError):
            store.delete_where()

    def test_failure_counters_slide_with_the_window(self, store):
        assert store.failures("acct:alice", T0, 60) == 0
        assert [store.incr_failure("acct:alice", T0 + i, 60) for i in range(3)] == [1, 2, 3]
        assert store.failures("acct:alice", T0 + 2, 60) == 3
        assert store.failures("acct:alice", T0 + 60.5, 60) == 2  # the failure at T0 left the window
        assert store.incr_failure("acct:alice", T0 + 61.5, 60) == 2  # T0+1 gone too, T0+2 and this one
        assert store.failures("ip:192.0.2.1", T0, 60) == 0
        assert self.peer(store).failures("acct:alice", T0 + 61.5, 60) == 2
        store.reset_failures("acct:alice")
        assert store.failures("acct:alice", T0 + 61.5, 60) == 0

    def test_totp_steps_are_compare_and_set(self, store):
        assert store.use_totp_step("alice", 66_000_000) is True
        assert store.use_totp_step("alice", 66_000_000) is False  # replay
        assert store.use_totp_step("alice", 65_999_999) is False  # older
        assert store.use_totp_step("bob", 65_999_999) is True  # per account
        assert store.use_totp_step("alice", 66_000_001) is True
        assert self.peer(store).use_totp_step("alice", 66_000_001) is False

    def test_consume_once(self, store):
        assert store.consume_once("receipt", "jti-1", T0 + 300) is True
        assert store.consume_once("receipt", "jti-1", T0 + 300) is False
        assert self.peer(store).consume_once("receipt", "jti-1", T0 + 300) is False
        assert store.consume_once("assertion", "jti-1", T0 + 300) is True  # namespaces are separate

    def test_concurrent_cas_has_exactly_one_winner(self, store):
        handles = [store] + [self.peer(store) for _ in range(3)]
        results: list[bool] = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def worker(i: int) -> None:
            h = handles[i % len(handles)]
            barrier.wait()
            a = h.use_totp_step("alice", 70_000_000)
            b = h.consume_once("receipt", "same", T0 + 300)
            with lock:
                results.append((a, b))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sum(a for a, _ in results) == 1 and sum(b for _, b in results) == 1

    def test_concurrent_touch_keeps_the_maximum_and_counts_every_failure(self, store):
        r = rec()
        store.create(r)
        handles = [store] + [self.peer(store) for _ in range(3)]

        def worker(i: int) -> None:
            h = handles[i % len(handles)]
            for j in range(10):
                h.touch(r.id, proved_at=T0 + i * 10 + j, last_seen=T0 + j, client_ip="c", long_grace=1)
                h.incr_failure("ip:x", T0 + j, 3600)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert store.get(r.id).proved_at == T0 + 79
        assert store.failures("ip:x", T0 + 9, 3600) == 80

    def test_housekeeping_forgets_old_records(self, store):
        live = rec(1)
        ended = rec(2, ended="logout", last_seen=T0)
        store.create(live)
        store.create(ended)
        store.consume_once("receipt", "old", T0 + 10)
        self.check_expiry(store, live, ended)


class PurgingStore(StoreConformance):
    """Stores that forget on ``purge(now)``."""

    def check_expiry(self, store, live, ended):
        assert store.purge(T0 + 5) == 0
        assert store.consume_once("receipt", "old", T0 + 10) is False  # remembered until it expires
        assert store.purge(T0 + TOMBSTONE_SECONDS - 1) == 0
        assert store.purge(T0 + TOMBSTONE_SECONDS) == 1
        assert store.get(ended.id) is None and store.get(live.id) == live
        assert store.consume_once("receipt", "old", T0 + 10) is True  # forgotten after it expired


class TestMemoryEngine(PurgingStore):
    @pytest.fixture
    def store(self):
        s = MemoryEngine()
        yield s
        s.close()

    def peer(self, store):
        return store

    def test_closed_store_refuses_use(self):
        s = MemoryEngine()
        s.close()
        with pytest.raises(StoreError, match="after close"):
            s.get("x")


class TestMemoryStore(PurgingStore):
    """The asynchronous face: every Deferred has fired when returned (no reactor involved)."""

    @pytest.fixture
    def store(self):
        s = MemoryStore()
        yield Blocking(s)
        s.close()

    def peer(self, store):
        return store

    def test_closed_store_refuses_use(self):
        s = MemoryStore()
        s.close()
        with pytest.raises(StoreError, match="after close"):
            Blocking(s).get("x")
        assert "after close" in s.monitor.problem()


class PersistentStore:
    """Data written survives closing and reopening the store (a gateway restart)."""

    def test_survives_reopen(self, store):
        store.create(rec())
        store.incr_failure("acct:alice", T0, 900)
        store.use_totp_step("alice", 5)
        store.consume_once("receipt", "r1", T0 + 300)
        again = self.reopen(store)
        try:
            assert again.get(rec().id) == rec()
            assert again.failures("acct:alice", T0, 900) == 1
            assert again.use_totp_step("alice", 5) is False
            assert again.consume_once("receipt", "r1", T0 + 300) is False
        finally:
            again.close()


class TestSQLiteEngine(PurgingStore, PersistentStore):
    @pytest.fixture
    def store(self, tmp_path):
        s = SQLiteEngine(tmp_path / "sessions.db")
        self._peers = []
        yield s
        for p in self._peers:
            p.close()
        s.close()

    def peer(self, store):
        p = SQLiteEngine(store.path)  # its own connection, as another worker process would have
        self._peers.append(p)
        return p

    def reopen(self, store):
        store.close()
        return SQLiteEngine(store.path)

    def test_file_mode_wal_and_open_store(self, tmp_path):
        s = open_engine("sqlite:sub/s.db", tmp_path)
        try:
            assert isinstance(s, SQLiteEngine) and s.path == tmp_path / "sub" / "s.db"
            assert (s.path.stat().st_mode & 0o777) == 0o600
            import sqlite3

            assert sqlite3.connect(s.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            s.close()

    def test_unusable_path_is_a_precise_error(self, tmp_path):
        (tmp_path / "f").write_text("x")
        with pytest.raises(StoreError, match=r"sqlite store .*f/s\.db"):
            SQLiteEngine(tmp_path / "f" / "s.db")
        (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
        with pytest.raises(StoreError, match="junk.db"):
            SQLiteEngine(tmp_path / "junk.db")

    def test_several_processes_count_every_failure(self, tmp_path):
        db = tmp_path / "shared.db"
        SQLiteEngine(db).close()
        code = ("import sys; from proxy.stores.sqlite import SQLiteEngine; s = SQLiteEngine(sys.argv[1]);\n"
                "wins = sum(s.use_totp_step('alice', 100) for _ in range(1));\n"
                "[s.incr_failure('ip:x', 2e9 + i, 3600) for i in range(40)]; print(wins)")
        root = Path(__file__).resolve().parents[2]
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], cwd=root, stdout=subprocess.PIPE)
                 for _ in range(4)]
        wins = [int(p.communicate(timeout=60)[0]) for p in procs]
        assert all(p.returncode == 0 for p in procs)
        assert sum(wins) == 1
        s = SQLiteEngine(db)
        try:
            assert s.failures("ip:x", 2e9 + 39, 3600) == 160
        finally:
            s.close()


class TestSQLiteStore(PurgingStore, PersistentStore):
    """The asynchronous face: the engine on its own thread, results delivered on a real reactor."""

    @pytest.fixture
    def store(self, tmp_path):
        reactor_running()
        s = SQLiteStore(tmp_path / "sessions.db")
        self._peers = []
        yield Blocking(s, blocking)
        for p in self._peers:
            p.store.close()
        s.close()

    def peer(self, store):
        p = Blocking(SQLiteStore(store.path), blocking)  # its own thread and connection
        self._peers.append(p)
        return p

    def reopen(self, store):
        store.close()
        return Blocking(SQLiteStore(store.path), blocking)

    def test_open_store_gives_the_threaded_store(self, tmp_path):
        s = open_store("sqlite:sub/s.db", tmp_path, reactor=reactor_running())
        try:
            assert isinstance(s, SQLiteStore) and s.path == tmp_path / "sub" / "s.db"
        finally:
            s.close()


class TestRedisEngine(StoreConformance, PersistentStore):
    @pytest.fixture
    def store(self, redis_server):  # noqa: F811
        redis_server.flush()
        s = RedisEngine(redis_server.url, wall=lambda: T0)
        self._peers = []
        yield s
        for p in self._peers:
            p.close()
        s.close()

    def peer(self, store):
        p = RedisEngine(store.url)
        self._peers.append(p)
        return p

    def reopen(self, store):
        store.close()
        return RedisEngine(store.url)

    def check_expiry(self, store, live, ended):
        # Redis forgets by itself: every key carries a TTL from the store's wall clock (here T0)
        assert TOMBSTONE_SECONDS - 10 < store.ttl("s", ended.id) <= TOMBSTONE_SECONDS
        assert 86400 * 31 - 10 < store.ttl("s", live.id) <= 86400 * 31
        assert 50 < store.ttl("o", "receipt:old") <= 60  # at least MIN_TTL
        assert store.consume_once("receipt", "old", T0 + 10) is False
        assert store.purge(T0 + 10 ** 6) == 0 and store.get(live.id) == live

    def test_open_engine_and_unreachable_server(self, redis_server):  # noqa: F811
        s = open_engine(redis_server.url, "/")
        try:
            assert isinstance(s, RedisEngine)
        finally:
            s.close()
        from tests.redis_fixture import free_port

        with pytest.raises(StoreError, match=r"redis store redis://127\.0\.0\.1:\d+/0"):
            RedisEngine(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)


def _connected_redis_store(url: str, **kw) -> RedisStore:
    from tests.blackbox import wait_for

    s = blocking(lambda: RedisStore(url, **kw))
    wait_for(lambda: s.connected() > 0, 10, what="the Redis store to connect")
    return s


class TestRedisStore(StoreConformance, PersistentStore):
    """The asynchronous face (txredisapi) against the same redis-server, on a real reactor."""

    @pytest.fixture
    def store(self, redis_server):  # noqa: F811
        redis_server.flush()
        s = _connected_redis_store(redis_server.url, wall=lambda: T0)
        self._peers = []
        yield Blocking(s, blocking)
        for p in self._peers:
            blocking(p.store.close)
        blocking(s.close)

    def peer(self, store):
        p = Blocking(_connected_redis_store(store.url), blocking)
        self._peers.append(p)
        return p

    def reopen(self, store):
        store.close()
        return Blocking(_connected_redis_store(store.url), blocking)

    def check_expiry(self, store, live, ended):
        assert TOMBSTONE_SECONDS - 10 < store.ttl("s", ended.id) <= TOMBSTONE_SECONDS
        assert 86400 * 31 - 10 < store.ttl("s", live.id) <= 86400 * 31
        assert 50 < store.ttl("o", "receipt:old") <= 60
        assert store.consume_once("receipt", "old", T0 + 10) is False
        assert store.purge(T0 + 10 ** 6) == 0 and store.get(live.id) == live

    def test_both_faces_share_one_layout(self, store, redis_server):  # noqa: F811
        engine = RedisEngine(redis_server.url)
        try:
            store.create(rec(1))
            assert engine.get(rec(1).id) == rec(1)
            engine.touch(rec(1).id, proved_at=T0 + 3, last_seen=T0 + 3, client_ip="c", long_grace=1)
            assert store.get(rec(1).id).proved_at == T0 + 3
            assert engine.create(rec(2), limit=1, replace=True) == [rec(1).id]
            assert store.get(rec(1).id).ended == REPLACED
        finally:
            engine.close()

    def test_unreachable_server_fails_fast_without_blocking(self):
        from tests.redis_fixture import free_port

        s = blocking(lambda: RedisStore(f"redis://127.0.0.1:{free_port()}/0", deadline=1))
        try:
            with pytest.raises(StoreError, match=r"redis store redis://127\.0\.0\.1:\d+/0: not connected"):
                Blocking(s, blocking).get("x")
            assert "not connected" in s.monitor.problem()
        finally:
            blocking(s.close)


def test_redis_urls_parse_and_refuse_passwords():
    t = parse_url("redis+sentinel://certgate@10.0.0.1:26379,[::1]:26380/mymaster/2")
    assert (t.scheme, t.hosts, t.service, t.db, t.username) == (
        "redis+sentinel", (("10.0.0.1", 26379), ("::1", 26380)), "mymaster", 2, "certgate")
    assert parse_url("rediss://h:6380/1").tls and parse_url("redis://h").hosts == (("h", 6379),)
    with pytest.raises(StoreError, match="password in the URL"):
        parse_url("redis://u:secret@h:6379/0")
    with pytest.raises(StoreError, match="service name"):
        parse_url("redis+sentinel://h:26379")
    with pytest.raises(StoreError, match="several hosts"):
        parse_url("redis://a:1,b:2/0")


def test_open_store_rejects_unknown_specs(tmp_path):
    assert isinstance(open_store("memory", tmp_path), MemoryStore)
    assert isinstance(open_engine("memory", tmp_path), MemoryEngine)
    for bad in ("mysql://x", "sqlite:", "files"):
        with pytest.raises(StoreError, match=r"\[sessions\] store"):
            open_store(bad, tmp_path)
        with pytest.raises(StoreError, match=r"\[sessions\] store"):
            open_engine(bad, tmp_path)
