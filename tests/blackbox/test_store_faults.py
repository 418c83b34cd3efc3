"""Fault tests with real processes: a real gateway whose session store fails under it.

During each fault a background client keeps making new TLS connections (a full handshake
each) to a certificate-only account's route; its latencies are recorded and their p99 is
printed (``-s`` shows it). Session requests must answer 503 ``session-store-unavailable``
with Retry-After within the deadline; afterwards the session and the failure counter are as
they were. Faults: Redis paused (SIGSTOP) longer than the deadline, Redis killed and
restarted (append-only file, nothing lost), a Sentinel failover from a killed or paused master
to its replica (sessions and counters replicated before the fault are on the new master), an
SQLite database whose write lock another process holds (WAL readers go on; every request of a
session writes its new proof, so it needs the lock).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.redis_fixture import RedisSentinel, RedisServer, free_port, wait_replicated
from tests.sessions_support import Gateway, Pki, client_context, get, login, request, session_config, wait_for

DEADLINE = 1.0
MARGIN = 1.5  # past the deadline: a TLS handshake and a request on a shared 2-core machine
POOL = 4  # [sessions] redis_pool_size


class CertOnlyLoad:
    """A thread doing new-connection requests as bob (certificate-only) until stopped; records
    the full TLS handshake (a fresh client context each time: no resumption) and the whole
    request (connect, handshake, answer) separately."""

    def __init__(self, port: int, pki: Pki) -> None:
        self.port, self.pki = port, pki
        self.latencies: list[float] = []
        self.handshakes: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CertOnlyLoad":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                               context=client_context(self.pki.client("bob"), self.pki.ca_pem))
            conn._server_hostname = "localhost"  # type: ignore[attr-defined]
            try:
                conn.connect()
                self.handshakes.append(time.monotonic() - t0)
                conn.request("GET", "/cert-only", headers={"Host": f"localhost:{self.port}",
                                                           "Accept": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    self.failures.append(f"{resp.status} {body[:100]!r}")
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(repr(e))
            finally:
                conn.close()
            self.latencies.append(time.monotonic() - t0)

    def p99(self, of: list[float] | None = None) -> float:
        xs = sorted(self.latencies if of is None else of)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")


def _config(tmp_path: Path, pki: Pki, upstream: str, store: str, admin: int | None = None) -> Path:
    extra: dict[str, dict[str, object]] = {"account:bob": {"required_auth_methods": '[["tls-cert"]]'}}
    if admin is not None:
        extra["admin"] = {"port": admin}
    sessions: dict[str, object] = {"store_deadline": DEADLINE}
    if store.startswith("redis"):
        sessions["redis_pool_size"] = POOL
    return session_config(tmp_path, pki, upstream, store=store, sessions=sessions, extra=extra)


def _check_503(status: int, headers: Any, body: bytes, took: float) -> None:
    assert status == 503, body
    assert json.loads(body)["error"] == "session-store-unavailable" and headers["Retry-After"] == "1"
    assert took < DEADLINE + MARGIN, took


def _expect_503_within_deadline(port: int, pki: Pki, cookie: str) -> float:
    t0 = time.monotonic()
    status, headers, body = get(port, pki, cookie)
    took = time.monotonic() - t0
    _check_503(status, headers, body, took)
    return took


def _failed_login(port: int, pki: Pki) -> int:
    status, _, _ = request(port, "POST", "/.certgate/api/auth", cert=pki.client("alice"), ca=pki.ca_pem,
                           headers={"Content-Type": "application/json", "Accept": "application/json"},
                           body=json.dumps({"account": "alice", "password": "wrong"}).encode())
    return status


def _report(name: str, load: CertOnlyLoad, took: list[float]) -> None:
    print(f"\n[{name}] certificate-only route during the fault: {len(load.latencies)} requests "
          f"(new TLS connection each), p99 {load.p99() * 1000:.0f} ms (full handshake alone: p99 "
          f"{load.p99(load.handshakes) * 1000:.0f} ms); session requests answered 503 in "
          f"{', '.join(f'{t * 1000:.0f}' for t in took) or '(none)'} ms")


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


def test_redis_paused_killed_and_restarted(tmp_path, pki):
    from tests.support_http import EchoServer

    srv = RedisServer(persistent=True).start()
    try:
        with EchoServer() as echo, Gateway(_config(tmp_path, pki, echo.url, srv.url)) as gw:
            wait_for(lambda: get(gw.port, pki, "x=y")[0] == 401, 10, what="the gateway to reach Redis")
            cookie = login(gw.port, pki)
            assert _failed_login(gw.port, pki) == 401  # one failure on alice's counters
            from proxy.stores.redis import RedisEngine

            engine = RedisEngine(srv.url)
            sid = __import__("proxy.sessions.manager", fromlist=["x"]).session_id_for(cookie.split("=", 1)[1])
            before = engine.get(sid)
            fails = engine.failures("account:alice", time.time(), 900)
            engine.close()
            assert before is not None and fails == 1
            took: list[float] = []
            with CertOnlyLoad(gw.port, pki) as load:
                srv.pause()  # longer than the deadline: every request below waits for it
                try:
                    for _ in range(3):
                        took.append(_expect_503_within_deadline(gw.port, pki, cookie))
                    assert _failed_login(gw.port, pki) == 503  # a login that cannot be recorded is refused
                finally:
                    srv.resume()
                wait_for(lambda: get(gw.port, pki, cookie)[0] == 200, 15, what=f"recovery after SIGCONT (last: {get(gw.port, pki, cookie)[:3:2]})")
                srv.kill()
                took.append(_expect_503_within_deadline(gw.port, pki, cookie))
                srv.start()  # same port, same append-only file
                wait_for(lambda: get(gw.port, pki, cookie)[0] == 200, 20, what="recovery after a restart")
            assert not load.failures, load.failures[:5]
            _report("redis SIGSTOP/SIGKILL/restart", load, took)
            engine = RedisEngine(srv.url)
            try:
                after = engine.get(sid)
                assert after.ended is None and after.created_at == before.created_at
                assert after.proved_at >= before.proved_at
                # the failed login before the outage is still counted; none was added by the refused one
                assert engine.failures("account:alice", time.time(), 900) == 1
            finally:
                engine.close()
            assert "session-store-unavailable" in gw.log() or "session-store-unavailable" in \
                (tmp_path / "gw" / "audit.jsonl").read_text()
    finally:
        srv.stop()


def test_sqlite_locked_by_another_process(tmp_path, pki):
    from tests.support_http import EchoServer

    db = tmp_path / "gw" / "sessions.db"
    with EchoServer() as echo, Gateway(_config(tmp_path, pki, echo.url, f"sqlite:{db}")) as gw:
        cookie = login(gw.port, pki)
        assert _failed_login(gw.port, pki) == 401
        locker = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
             "c.execute('BEGIN IMMEDIATE')\n"
             "c.execute(\"DELETE FROM once WHERE ns = 'nothing'\")\nprint('locked', flush=True)\n"
             "sys.stdin.readline()\nc.execute('ROLLBACK')", str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        took: list[float] = []
        try:
            with CertOnlyLoad(gw.port, pki) as load:
                assert locker.stdout.readline().strip() == "locked"
                for _ in range(3):
                    took.append(_expect_503_within_deadline(gw.port, pki, cookie))
                assert _failed_login(gw.port, pki) == 503
                locker.stdin.write("\n")
                locker.stdin.flush()
                assert locker.wait(10) == 0
                wait_for(lambda: get(gw.port, pki, cookie)[0] == 200, 15, what="recovery after the lock")
            assert not load.failures, load.failures[:5]
            _report("sqlite locked", load, took)
        finally:
            if locker.poll() is None:
                locker.kill()
        from proxy.stores.sqlite import SQLiteEngine

        engine = SQLiteEngine(db)
        try:
            assert engine.failures("account:alice", time.time(), 900) == 1
            assert [r.account for r in engine.list() if r.ended is None] == ["alice"]
        finally:
            engine.close()


def _health(admin: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _clients(port: int) -> int:
    """Connections to the Redis server on ``port`` other than Sentinel's, replicas' and this one."""
    import redis

    with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as r:
        return len([c for c in r.client_list() if not c["name"].startswith("sentinel-")
                    and "S" not in c["flags"] and c["cmd"] != "client|list"])


@pytest.mark.parametrize("fault", ["kill", "pause", "pause-idle"])
def test_sentinel_failover_under_a_running_gateway(tmp_path, pki, fault):
    """A master, its replica and a Sentinel (quorum 1); the gateway's store is redis+sentinel://.
    The master is killed, or paused and resumed after the failover (a stale master that comes
    back still a master must not get the gateway's writes); ``pause-idle`` sends no session
    request while it is paused, so the gateway has to leave its idle connections to the old
    master by itself (its Sentinel watch, or a sweep that timed out). During the failover every session request answers 200 or 503 within the
    deadline (never a hang, never a 401); afterwards the same cookie works, the session and the
    failure counter are on the promoted replica, /health is ok again."""
    import redis

    from proxy.sessions.manager import session_id_for
    from proxy.stores.interface import record_to_json
    from proxy.stores.redis import RedisEngine
    from tests.support_http import EchoServer

    master = RedisServer(extra=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sentinel = RedisSentinel(master.port, down_after_ms=500, failover_timeout_ms=3000)
    try:
        sentinel.start()
        wait_for(lambda: sentinel.replicas_ready() == [replica.port], 15, what="Sentinel to see the replica in sync")
        admin = free_port()
        with EchoServer() as echo, Gateway(_config(tmp_path, pki, echo.url, sentinel.url, admin)) as gw:
            wait_for(lambda: _health(admin) == {"status": "ok"}, 10, what="the gateway to find the master")
            cookie = login(gw.port, pki)
            assert _failed_login(gw.port, pki) == 401  # one failure on alice's counters
            sid = session_id_for(cookie.split("=", 1)[1])
            wait_replicated(master, replica)  # nothing written so far may be lost by the failover
            old = RedisEngine(master.url)
            before = old.get(sid)
            old.close()
            on_replica = RedisEngine(replica.url)
            assert before is not None and on_replica.get(sid) == before
            assert on_replica.failures("account:alice", time.time(), 900) == 1
            on_replica.close()
            wait_for(lambda: _clients(master.port) == POOL, 10, what=f"the gateway's {POOL} connections on the master")

            answers: list[tuple[float, int | str, Any, bytes]] = []
            problems: list[str] = []

            def answered_again() -> bool:
                if not problems:  # /health, until it has said why once
                    problems.extend(_health(admin).get("problems", []))
                t = time.monotonic()
                try:
                    status, headers, body = get(gw.port, pki, cookie)
                except (OSError, http.client.HTTPException) as e:
                    answers.append((time.monotonic() - t, repr(e), None, b""))
                    return False
                answers.append((time.monotonic() - t, status, headers, body))
                return status == 200 and sentinel.master() == ("127.0.0.1", replica.port)

            with CertOnlyLoad(gw.port, pki) as load:
                t0 = time.monotonic()
                master.kill() if fault == "kill" else master.pause()
                if fault == "pause-idle":
                    wait_for(lambda: sentinel.master() == ("127.0.0.1", replica.port), 15,
                             what="Sentinel to promote the replica")
                    wait_for(lambda: _clients(replica.port) == POOL, 10,  # by its Sentinel watch, or a timeout
                             what=f"the gateway's {POOL} connections on the new master (not the old one)")
                else:
                    wait_for(answered_again, 30, what=f"the session after the failover (last: {answers[-1:]})")
                recovered = time.monotonic() - t0
                if fault != "kill":
                    master.resume()  # still a master, with the old data: Sentinel demotes it 8 s later
                wait_for(answered_again, 30, what=f"the session after the failover (last: {answers[-1:]})")
                for _ in range(3):
                    assert get(gw.port, pki, cookie)[0] == 200
                if fault != "kill":
                    with redis.Redis(port=master.port).pipeline(transaction=True) as p:
                        role, raw = p.role().get(f"certgate:s:{sid}").execute()
                    assert role[0] == b"master"  # the dangerous moment: nothing may have been written there
                    assert raw.decode() == record_to_json(before)
            assert not load.failures, load.failures[:5]
            bad = [a for a in answers if a[1] not in (200, 503)]
            assert not bad, bad[:3]  # never a hang, a reset or a 401 (a lost session would ask for a login)
            took = [a[0] for a in answers if a[1] == 503]
            for t, status, headers, body in answers:
                if status == 503:
                    _check_503(status, headers, body, t)
            if fault != "pause-idle":  # the idle gateway asked nothing while the master was away
                assert took, "the failover was never seen by a session request"
                assert any(p.startswith("session store unreachable") for p in problems), problems
            wait_for(lambda: _health(admin) == {"status": "ok"}, 10, what="/health to be ok again")
            assert gw.proc is not None and gw.proc.poll() is None  # the same process throughout
            _report(f"sentinel failover ({fault})", load, took)
            print(f"[sentinel failover ({fault})] the gateway was on the new master {recovered:.1f} s after the "
                  f"master was {'killed' if fault == 'kill' else 'stopped'}; {len(answers)} session requests, "
                  f"{len(took)} answered 503")
        new = RedisEngine(replica.url)  # the promoted replica
        try:
            after = new.get(sid)
            assert after.ended is None and after.created_at == before.created_at
            assert after.proved_at > before.proved_at  # the gateway wrote to the new master
            assert [r.id for r in new.list() if r.ended is None] == [sid]  # no second login
            assert new.failures("account:alice", time.time(), 900) == 1
        finally:
            new.close()
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()
