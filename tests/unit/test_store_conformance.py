"""One conformance mixin for ISessionStore, run against memory, SQLite and a real redis-server."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from proxy.stores import StoreError, open_store
from proxy.stores.interface import ISessionStore, SessionRecord, TOMBSTONE_SECONDS
from proxy.stores.memory import MemoryStore
from proxy.stores.redis import RedisStore
from proxy.stores.sqlite import SQLiteStore
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

    def test_is_an_isessionstore(self, store):
        assert isinstance(store, ISessionStore)

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


class TestMemoryStore(PurgingStore):
    @pytest.fixture
    def store(self):
        s = MemoryStore()
        yield s
        s.close()

    def peer(self, store):
        return store

    def test_closed_store_refuses_use(self):
        s = MemoryStore()
        s.close()
        with pytest.raises(StoreError, match="after close"):
            s.get("x")


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


class TestSQLiteStore(PurgingStore, PersistentStore):
    @pytest.fixture
    def store(self, tmp_path):
        s = SQLiteStore(tmp_path / "sessions.db")
        self._peers = []
        yield s
        for p in self._peers:
            p.close()
        s.close()

    def peer(self, store):
        p = SQLiteStore(store.path)  # its own connection, as another worker process would have
        self._peers.append(p)
        return p

    def reopen(self, store):
        store.close()
        return SQLiteStore(store.path)

    def test_file_mode_wal_and_open_store(self, tmp_path):
        s = open_store("sqlite:sub/s.db", tmp_path)
        try:
            assert isinstance(s, SQLiteStore) and s.path == tmp_path / "sub" / "s.db"
            assert (s.path.stat().st_mode & 0o777) == 0o600
            import sqlite3

            assert sqlite3.connect(s.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            s.close()

    def test_unusable_path_is_a_precise_error(self, tmp_path):
        (tmp_path / "f").write_text("x")
        with pytest.raises(StoreError, match=r"sqlite store .*f/s\.db"):
            SQLiteStore(tmp_path / "f" / "s.db")
        (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
        with pytest.raises(StoreError, match="junk.db"):
            SQLiteStore(tmp_path / "junk.db")

    def test_several_processes_count_every_failure(self, tmp_path):
        db = tmp_path / "shared.db"
        SQLiteStore(db).close()
        code = ("import sys; from proxy.stores.sqlite import SQLiteStore; s = SQLiteStore(sys.argv[1]);\n"
                "wins = sum(s.use_totp_step('alice', 100) for _ in range(1));\n"
                "[s.incr_failure('ip:x', 2e9 + i, 3600) for i in range(40)]; print(wins)")
        root = Path(__file__).resolve().parents[2]
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], cwd=root, stdout=subprocess.PIPE)
                 for _ in range(4)]
        wins = [int(p.communicate(timeout=60)[0]) for p in procs]
        assert all(p.returncode == 0 for p in procs)
        assert sum(wins) == 1
        s = SQLiteStore(db)
        try:
            assert s.failures("ip:x", 2e9 + 39, 3600) == 160
        finally:
            s.close()


class TestRedisStore(StoreConformance, PersistentStore):
    @pytest.fixture
    def store(self, redis_server):  # noqa: F811
        redis_server.flush()
        s = RedisStore(redis_server.url, wall=lambda: T0)
        self._peers = []
        yield s
        for p in self._peers:
            p.close()
        s.close()

    def peer(self, store):
        p = RedisStore(store.url)
        self._peers.append(p)
        return p

    def reopen(self, store):
        store.close()
        return RedisStore(store.url)

    def test_get_many(self, store):
        store.create(rec(1))
        store.create(rec(2, ended="logout"))
        got = store.get_many([rec(1).id, rec(2).id, rec(3).id])
        assert got == {rec(1).id: rec(1), rec(2).id: rec(2, ended="logout"), rec(3).id: None}
        assert store.get_many([]) == {}

    def check_expiry(self, store, live, ended):
        # Redis forgets by itself: every key carries a TTL from the store's wall clock (here T0)
        assert TOMBSTONE_SECONDS - 10 < store.ttl("s", ended.id) <= TOMBSTONE_SECONDS
        assert 86400 * 31 - 10 < store.ttl("s", live.id) <= 86400 * 31
        assert 50 < store.ttl("o", "receipt:old") <= 60  # at least MIN_TTL
        assert store.consume_once("receipt", "old", T0 + 10) is False
        assert store.purge(T0 + 10 ** 6) == 0 and store.get(live.id) == live

    def test_open_store_and_unreachable_server(self, redis_server):  # noqa: F811
        s = open_store(redis_server.url, "/")
        try:
            assert isinstance(s, RedisStore)
        finally:
            s.close()
        from tests.redis_fixture import free_port

        with pytest.raises(StoreError, match=r"redis store redis://127\.0\.0\.1:\d+/0"):
            RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)


def test_open_store_rejects_unknown_specs(tmp_path):
    assert isinstance(open_store("memory", tmp_path), MemoryStore)
    for bad in ("mysql://x", "sqlite:", "files"):
        with pytest.raises(StoreError, match=r"\[sessions\] store"):
            open_store(bad, tmp_path)
