"""The asynchronous store machinery with a fake clock: deadlines, the bounded queue, health, metrics."""

from __future__ import annotations

import threading

import pytest
from twisted.internet.task import Clock

from proxy.observe.metrics import Metrics
from proxy.stores import StoreError
from proxy.stores.asynchronous import ThreadedStore
from tests.blackbox import wait_for


class Deliveries:
    """Stands in for the reactor's callFromThread: results wait here until the test delivers them."""

    def __init__(self) -> None:
        self.calls: list = []
        self.lock = threading.Lock()

    def callFromThread(self, f, *a) -> None:  # noqa: N802
        with self.lock:
            self.calls.append((f, a))

    def deliver(self) -> int:
        with self.lock:
            calls, self.calls = self.calls, []
        for f, a in calls:
            f(*a)
        return len(calls)


class SlowEngine:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = False

    def get(self, session_id):
        self.release.wait(30)
        return f"record {session_id}"

    def ping(self):
        return None

    def close(self):
        self.closed = True


def outcome(d):
    """The Deferred's result so far (None while pending), leaving the result in place."""
    out = []

    def seen(r):
        out.append(r)
        return r
    d.addBoth(seen)
    return out[0] if out else None


def test_deadline_queue_bound_health_and_metrics():
    clock, rx, engine, metrics = Clock(), Deliveries(), SlowEngine(), Metrics()
    s = ThreadedStore(engine, "test store", reactor=rx, clock=clock, deadline=2.0, max_queue=2)
    s.monitor.use_metrics(metrics)
    try:
        d1, d2 = s.get("a"), s.get("b")  # a running, b waiting behind it on the one thread
        full = outcome(s.get("c"))
        assert full is not None and full.check(StoreError) and "queue full" in full.getErrorMessage()
        assert outcome(d1) is None  # the reactor thread did not wait for the engine
        clock.advance(2.0)
        late = outcome(d1)
        assert late.check(StoreError) and "get did not finish within 2 s" in late.getErrorMessage()
        assert "did not finish" in s.monitor.problem()
        engine.release.set()
        wait_for(lambda: rx.deliver() or s.pending == 0, 10, what="the worker to finish")
        wait_for(lambda: rx.deliver() >= 0 and s.pending == 0, 10, what="both results delivered")
        assert outcome(d2).check(StoreError)  # late too: its result is dropped, never delivered twice
        d4 = s.get("d")
        wait_for(lambda: rx.deliver() and outcome(d4) is not None, 10, what="a fresh answer")
        assert outcome(d4) == "record d" and s.monitor.problem() is None  # healthy again, no restart
        assert metrics.value("store_errors_total") == 3
        assert metrics.value("store_operations_total", "get", "ok") == 1
    finally:
        engine.release.set()
        s.close()
    assert engine.closed
    closed = outcome(s.get("x"))
    assert closed.check(StoreError) and "after close" in closed.getErrorMessage()
