"""The Redis store as deployed for several machines, against real redis-server and redis-sentinel
processes: TLS with a verified server certificate, an ACL user whose password comes from a file,
and a Sentinel failover (the store follows the new master and keeps what was replicated)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from proxy.stores import StoreError
from proxy.stores.redis import RedisEngine, RedisStore
from tests.blackbox import Pki, wait_for
from tests.reactor_thread import Blocking, blocking
from tests.redis_fixture import RedisSentinel, RedisServer, free_port, wait_replicated
from tests.unit.test_store_conformance import rec

ACL = ["--user", "default", "off", "--user", "certgate", "on", ">s3cret-redis-pw", "~certgate:*", "+@all"]


def _store(url: str, **kw) -> RedisStore:
    return blocking(lambda: RedisStore(url, deadline=1, **kw))


@pytest.fixture
def tls_acl_server(tmp_path):
    pki = Pki(tmp_path / "pki")
    tls_port = free_port()
    srv = RedisServer(extra=["--tls-port", str(tls_port), "--tls-cert-file", str(pki.server_cert),
                             "--tls-key-file", str(pki.server_key), "--tls-ca-cert-file", pki.ca_pem,
                             "--tls-auth-clients", "no", *ACL]).start()
    (tmp_path / "redis.pass").write_text("s3cret-redis-pw\n")
    yield srv, tls_port, pki, tmp_path / "redis.pass"
    srv.stop()


def test_rediss_with_acl_user_and_password_file(tls_acl_server, tmp_path):
    srv, tls_port, pki, pw = tls_acl_server
    url = f"rediss://certgate@localhost:{tls_port}/0"
    s = _store(url, password_file=pw, ca_file=pki.ca_pem)
    try:
        wait_for(lambda: s.connected() > 0, 10, what="a verified TLS connection as the ACL user")
        b = Blocking(s, blocking)
        b.create(rec(1))
        assert b.get(rec(1).id) == rec(1) and b.use_totp_step("alice", 5) is True
        assert "s3cret" not in repr(s) and "s3cret" not in s.name
    finally:
        blocking(s.close)
    engine = RedisEngine(url, password_file=pw, ca_file=pki.ca_pem)  # the command line tools' face
    try:
        assert engine.get(rec(1).id) == rec(1)
    finally:
        engine.close()


@pytest.mark.parametrize("problem", ["rogue-ca", "wrong-password"])
def test_rediss_refuses_an_unverified_server_or_a_wrong_password(tls_acl_server, tmp_path, problem):
    srv, tls_port, pki, pw = tls_acl_server
    if problem == "rogue-ca":
        ca = tmp_path / "rogue.pem"
        from cryptography.hazmat.primitives.serialization import Encoding

        ca.write_bytes(pki.rogue_ca.cert.public_bytes(Encoding.PEM))
    else:
        ca = Path(pki.ca_pem)
        pw.write_text("not-the-password\n")
    good_pw = tmp_path / "good.pass"
    good_pw.write_text("s3cret-redis-pw\n")
    s = _store(f"rediss://certgate@localhost:{tls_port}/0", password_file=pw, ca_file=ca)
    control = _store(f"rediss://certgate@localhost:{tls_port}/0", password_file=good_pw, ca_file=pki.ca_pem)
    try:
        with pytest.raises(StoreError, match="not connected"):
            Blocking(s, blocking).get("x")
        wait_for(lambda: control.connected() > 0, 10, what="the correctly configured store to connect")
        assert s.connected() == 0  # never served from an unverified server or without the password
        with pytest.raises(StoreError, match="not connected"):
            Blocking(s, blocking).get("x")
    finally:
        blocking(s.close)
        blocking(control.close)
    with pytest.raises(StoreError):
        RedisEngine(f"rediss://certgate@localhost:{tls_port}/0", password_file=pw, ca_file=ca, socket_timeout=2)


def test_sentinel_failover_moves_the_store_to_the_new_master(tmp_path):
    master = RedisServer(extra=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sentinel = RedisSentinel(master.port)
    s = None
    try:
        sentinel.start()
        s = _store(sentinel.url)
        wait_for(lambda: s.connected() > 0, 15, what="the store to find the master through Sentinel")
        b = Blocking(s, blocking)
        b.create(rec(1))
        b.incr_failure("account:alice", 2e9, 900)
        wait_replicated(master, replica)
        t0 = time.monotonic()
        master.kill()
        with pytest.raises(StoreError):
            b.get(rec(1).id)  # the old master is gone: answered within the deadline, never hangs
        wait_for(lambda: b.get(rec(1).id) == rec(1), 30, what="the store on the promoted replica")
        print(f"\n[sentinel failover] the store answered again {time.monotonic() - t0:.1f} s after the master died")
        assert b.failures("account:alice", 2e9, 900) == 1
        b.create(rec(2))  # writable: it is the new master
        assert RedisEngine(replica.url).get(rec(2).id) == rec(2)
    finally:
        if s is not None:
            blocking(s.close)
        sentinel.stop()
        replica.stop()
        master.stop()


def test_sentinel_failover_while_idle_never_writes_to_the_returning_old_master():
    """The master stops answering while the store sends it nothing, Sentinel promotes the
    replica, the old master comes back still calling itself master (Sentinel demotes it only
    after it has been back for 8 s): the store must have closed its idle connections to it
    and write to the new master only (a write to the old one would be lost at its resync)."""
    import redis

    master = RedisServer(extra=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sentinel = RedisSentinel(master.port)
    s = None
    try:
        sentinel.start()
        s = _store(sentinel.url, pool_size=3)
        wait_for(lambda: s.connected() == 3, 15, what="the store's connections to the master")
        assert set(blocking(s.servers)) == {("127.0.0.1", master.port)}
        b = Blocking(s, blocking)
        b.create(rec(1))
        wait_replicated(master, replica)
        master.pause()  # the store sends nothing from here on: its connections stay open
        wait_for(lambda: sentinel.master() == ("127.0.0.1", replica.port), 15, what="Sentinel to promote the replica")
        wait_for(lambda: set(blocking(s.servers)) == {("127.0.0.1", replica.port)}, 10,
                 what=f"the store to leave the old master (connected to {blocking(s.servers)})")
        master.resume()
        for i in (2, 3, 4):
            b.create(rec(i))
        b.incr_failure("account:alice", 2e9, 900)
        with redis.Redis(port=master.port).pipeline(transaction=True) as pipe:
            role, keys = pipe.role().keys("certgate:*").execute()
        assert role[0] == b"master"  # still a master with the old data: the dangerous moment
        assert sorted(keys) == [b"certgate:a:alice", f"certgate:s:{rec(1).id}".encode()], keys  # nothing new
        new = RedisEngine(replica.url)
        try:
            assert [new.get(rec(i).id) for i in (1, 2, 3, 4)] == [rec(i) for i in (1, 2, 3, 4)]
            assert new.failures("account:alice", 2e9, 900) == 1
        finally:
            new.close()
    finally:
        if s is not None:
            blocking(s.close)
        sentinel.stop()
        replica.stop()
        master.stop()
