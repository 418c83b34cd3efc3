"""Fault tests with real processes: a real gateway whose session store fails under it.

During each fault a background client keeps making new TLS connections (a full handshake
each) to a certificate-only account's route; its latencies are recorded and their p99 is
printed (``-s`` shows it). Session requests must answer 503 ``session-store-unavailable``
with Retry-After within the deadline; afterwards the session and the failure counter are as
they were. Faults: Redis paused (SIGSTOP) longer than the deadline, Redis killed and
restarted (append-only file, nothing lost), an SQLite database whose write lock another process
holds (WAL readers go on; every request of a session writes its new proof, so it needs the lock).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.redis_fixture import RedisServer
from tests.sessions_support import PASSWORD, Gateway, Pki, get, login, request, session_config, wait_for

DEADLINE = 1.0


class CertOnlyLoad:
    """A thread doing new-connection requests as bob (certificate-only) until stopped."""

    def __init__(self, port: int, pki: Pki) -> None:
        self.port, self.pki = port, pki
        self.latencies: list[float] = []
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
            try:
                status, _, body = request(self.port, "GET", "/cert-only", cert=self.pki.client("bob"),
                                          ca=self.pki.ca_pem, headers={"Accept": "application/json"}, timeout=10)
                if status != 200:
                    self.failures.append(f"{status} {body[:100]!r}")
            except OSError as e:
                self.failures.append(repr(e))
            self.latencies.append(time.monotonic() - t0)

    def p99(self) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")


def _config(tmp_path: Path, pki: Pki, upstream: str, store: str) -> Path:
    return session_config(tmp_path, pki, upstream, store=store, sessions={"store_deadline": DEADLINE},
                          extra={"account:bob": {"required_auth_methods": '[["tls-cert"]]'}})


def _expect_503_within_deadline(port: int, pki: Pki, cookie: str) -> float:
    t0 = time.monotonic()
    status, headers, body = get(port, pki, cookie)
    took = time.monotonic() - t0
    assert status == 503, body
    assert json.loads(body)["error"] == "session-store-unavailable" and headers["Retry-After"] == "1"
    assert took < DEADLINE + 1.5, took  # the deadline, plus a TLS handshake on a shared 2-core machine
    return took


def _failed_login(port: int, pki: Pki) -> int:
    status, _, _ = request(port, "POST", "/.certgate/api/auth", cert=pki.client("alice"), ca=pki.ca_pem,
                           headers={"Content-Type": "application/json", "Accept": "application/json"},
                           body=json.dumps({"account": "alice", "password": "wrong"}).encode())
    return status


def _report(name: str, load: CertOnlyLoad, took: list[float]) -> None:
    print(f"\n[{name}] certificate-only route during the fault: {len(load.latencies)} requests "
          f"(new TLS connection each), p99 {load.p99() * 1000:.0f} ms; session requests answered 503 in "
          f"{', '.join(f'{t * 1000:.0f}' for t in took)} ms")


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
