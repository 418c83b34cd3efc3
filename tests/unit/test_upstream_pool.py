"""Upstream pool (proxy.http.upstream): limits, idle reuse, waiting, failures — MemoryReactor only."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionRefusedError, TimeoutError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from proxy.http.upstream import UpstreamPools
from tests.harness.config import engine_config
from tests.harness.engine import Transport


class Req:
    def __init__(self) -> None:
        self.ready: list[Any] = []
        self.failed: list[int] = []
        self.gone = False

    def upstream_ready(self, conn: Any) -> None:
        self.ready.append(conn)

    def upstream_failed(self, status: int) -> None:
        self.failed.append(status)

    def upstream_lost(self, clean: bool) -> None:
        pass


def _pool(**kw: Any) -> tuple[Any, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    cfg = engine_config("http://up.test:81", {"upstream": kw})
    pools = UpstreamPools(cfg.routes, reactor, reactor)
    return pools.pool_for(cfg.default_route), reactor


def _complete(reactor: MemoryReactorClock, i: int) -> tuple[Any, Transport]:
    host, port, factory, timeout, _ = reactor.tcpClients[i]
    conn = factory.buildProtocol(None)
    t = Transport()
    t.protocol = conn
    conn.makeConnection(t)
    return conn, t


def test_connects_with_timeout_then_reuses_idle() -> None:
    pool, reactor = _pool(connect_timeout=3.0)
    r1 = Req()
    pool.acquire(r1)
    host, port, _, timeout, _ = reactor.tcpClients[0]
    assert (host, port, timeout) == ("up.test", 81, 3.0)
    conn, t = _complete(reactor, 0)
    assert r1.ready == [conn] and conn.requester is r1
    pool.release(conn, True)
    r2 = Req()
    pool.acquire(r2)
    assert r2.ready == [conn] and conn.reused and len(reactor.tcpClients) == 1


def test_unclean_release_closes() -> None:
    pool, reactor = _pool()
    r = Req()
    pool.acquire(r)
    conn, t = _complete(reactor, 0)
    pool.release(conn, False)
    assert t.lost and pool.idle == [] and pool.open == 0


def test_max_connections_queue_and_handoff() -> None:
    pool, reactor = _pool(max_connections=1)
    a, b = Req(), Req()
    pool.acquire(a)
    pool.acquire(b)
    assert len(reactor.tcpClients) == 1 and list(pool.waiting) == [b]
    conn, _ = _complete(reactor, 0)
    pool.release(conn, True)
    assert b.ready == [conn]


def test_waiter_served_when_a_connection_dies() -> None:
    pool, reactor = _pool(max_connections=1)
    a, b = Req(), Req()
    pool.acquire(a)
    pool.acquire(b)
    conn, t = _complete(reactor, 0)
    t.abortConnection()
    assert len(reactor.tcpClients) == 2  # b gets a fresh connection


def test_max_idle() -> None:
    pool, reactor = _pool(max_idle=1)
    reqs = [Req(), Req()]
    for r in reqs:
        pool.acquire(r)
    c1, t1 = _complete(reactor, 0)
    c2, t2 = _complete(reactor, 1)
    pool.release(c1, True)
    pool.release(c2, True)
    assert pool.idle == [c1] and t2.lost


def test_connect_failures() -> None:
    pool, reactor = _pool()
    r = Req()
    pool.acquire(r)
    reactor.tcpClients[0][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    r2 = Req()
    pool.acquire(r2)
    reactor.tcpClients[1][2].clientConnectionFailed(None, Failure(TimeoutError()))
    assert r.failed == [502] and r2.failed == [504] and pool.open == 0


def test_cancel_and_gone_requesters() -> None:
    pool, reactor = _pool(max_connections=1)
    a, b = Req(), Req()
    pool.acquire(a)
    pool.acquire(b)
    pool.cancel(b)
    a.gone = True
    conn, t = _complete(reactor, 0)  # a left while connecting: the connection goes idle
    assert a.ready == [] and pool.idle == [conn] and b.ready == []


def test_idle_connection_closed_by_upstream_leaves_pool() -> None:
    pool, reactor = _pool()
    r = Req()
    pool.acquire(r)
    conn, t = _complete(reactor, 0)
    pool.release(conn, True)
    conn.connectionLost(Failure(ConnectionDone()))
    assert pool.idle == [] and pool.open == 0


def test_unexpected_bytes_on_idle_connection_close_it() -> None:
    pool, reactor = _pool()
    r = Req()
    pool.acquire(r)
    conn, t = _complete(reactor, 0)
    pool.release(conn, True)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
    assert t.lost and pool.idle == []


def test_close_fails_waiters() -> None:
    pool, reactor = _pool(max_connections=1)
    a, b = Req(), Req()
    pool.acquire(a)
    pool.acquire(b)
    pool.close()
    assert b.failed == [502]
