"""The Redis store as deployed for several machines, against real redis-server and redis-sentinel
processes: TLS with a verified server certificate, an ACL user whose password comes from a file,
and a Sentinel failover (the store follows the new master and keeps what was replicated)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from proxy.stores import StoreError
from proxy.stores.redis import RedisEngine, RedisStore
from tests.harness.pki import Pki
from tests.harness.reactor_thread import blocking, Blocking
from tests.harness.redis_server import RedisServer
from tests.harness.wait import free_port, wait_for
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
    import shutil

    exe = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
    if not Path(exe).exists():
        raise RuntimeError("redis-sentinel not found: install Debian's redis-sentinel (apt-get install redis-sentinel)")
    master = RedisServer().start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sport = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sport}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor certgate 127.0.0.1 {master.port} 1\n"
                    "sentinel down-after-milliseconds certgate 500\nsentinel failover-timeout certgate 3000\n")
    sentinel = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    s = None
    try:
        url = f"redis+sentinel://127.0.0.1:{sport}/certgate/0"
        s = _store(url)
        wait_for(lambda: s.connected() > 0, 15, what="the store to find the master through Sentinel")
        b = Blocking(s, blocking)
        b.create(rec(1))
        b.incr_failure("account:alice", 2e9, 900)
        engine = RedisEngine(master.url)
        wait_for(lambda: engine._r.execute_command("WAIT", 1, 200) >= 1, 10, what="replication")
        engine.close()
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
        sentinel.terminate()
        sentinel.wait(10)
        replica.stop()
        master.stop()
