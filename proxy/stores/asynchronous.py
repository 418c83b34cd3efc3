"""The asynchronous face of the stores: deadlines, a bounded worker thread, health and metrics.

- :class:`ImmediateStore` runs a fast in-process engine (memory) at once; each Deferred it
  returns has already fired.
- :class:`ThreadedStore` runs a blocking engine (SQLite) on one dedicated thread, so a long
  lock wait stalls that thread only, never the reactor. Its queue is bounded (``max_queue``
  operations waiting or running; more fail at once) and every operation has a deadline on
  the injected clock: past it the caller gets :class:`StoreError` while the thread finishes
  the operation in the background (its result is dropped).
- :class:`StoreMonitor` watches every operation of a store: the last failure (``/health``
  says ``degraded`` with it until an operation succeeds again), counts and seconds by
  operation and outcome in the metrics.

What is *not* done here: retrying. A failed or late operation is reported, and the caller
decides (the gate answers 503 ``session-store-unavailable``; a TOTP step or receipt that
cannot be recorded is refused).
"""

from __future__ import annotations

import builtins
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from proxy.stores.interface import SessionRecord, StoreError

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock, ThreadingClock
    from proxy.observe.seams import MetricChild, MetricFamily, MetricsRegistry
    from proxy.stores.interface import IBlockingStore as BlockingStore

#: default seconds an operation may take before the caller is told the store is unavailable
DEFAULT_DEADLINE = 2.0
#: default bound of operations waiting for or running on a store's worker thread
DEFAULT_MAX_QUEUE = 256


class StoreMonitor:
    """Health and metrics of one store; ``clock`` gives ``seconds()`` (latency is measured on it)."""

    def __init__(self, clock: Clock, name: str) -> None:
        self.clock = clock
        self.name = name
        self.last_error: str | None = None
        self.errors = 0
        #: operations by op/outcome, their seconds by op, errors (None until use_metrics)
        self._metrics: tuple[MetricFamily, MetricFamily, MetricChild] | None = None

    def use_metrics(self, metrics: MetricsRegistry | None) -> None:
        """Count operations by ``op``/``outcome``, their latency (a histogram), and errors (once)."""
        if self._metrics is not None or metrics is None:
            return
        ops = metrics.counter("store_operations_total", "Session store operations by outcome", ("op", "outcome"))
        secs = metrics.histogram("store_operation_duration_seconds",
                                 "Session store operation latency (to its answer or its deadline)", ("op",))
        errs = metrics.counter("store_errors_total", "Session store operations that failed or missed "
                               "their deadline").labels()
        self._metrics = (ops, secs, errs)

    def watch(self, op: str, d: "Deferred[Any]") -> "Deferred[Any]":
        """Record how ``d`` ends; returns ``d`` unchanged (its result passes through)."""
        started = self.clock.seconds()

        def done(result: Any) -> Any:
            failed = isinstance(result, Failure) and result.check(StoreError) is not None
            self.observe(op, self.clock.seconds() - started, result.getErrorMessage() if failed else None)
            return result
        return d.addBoth(done)

    def observe(self, op: str, seconds: float, error: str | None) -> None:
        if error is None:
            self.last_error = None
        else:
            self.errors += 1
            self.last_error = error
        if self._metrics is not None:
            ops, secs, errs = self._metrics
            ops.labels(op, "error" if error else "ok").inc()
            secs.labels(op).observe(max(0.0, seconds))
            if error:
                errs.inc()

    def problem(self) -> str | None:
        """Why the store is degraded (its last operation failed), or None."""
        return self.last_error


class _EngineStore:
    """Shared plumbing: one method per operation of :class:`~proxy.stores.interface.ISessionStore`,
    each handing its name and arguments to ``_submit`` (same arguments as the engine's)."""

    kind = "engine"
    engine: BlockingStore | None  # None: the store speaks to its backend itself (Redis)

    def __init__(self, engine: BlockingStore | None, name: str, monitor: StoreMonitor) -> None:
        self.engine = engine
        self.name = name
        self.monitor = monitor

    def _submit(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> "Deferred[Any]":
        raise NotImplementedError

    def create(self, rec: SessionRecord, *, limit: int = 0, replace: bool = False) -> "Deferred[list[str]]":
        return self._submit("create", (rec,), {"limit": limit, "replace": replace})

    def get(self, session_id: str) -> "Deferred[SessionRecord | None]":
        return self._submit("get", (session_id,), {})

    def get_many(self, session_ids: list[str]) -> "Deferred[dict[str, SessionRecord | None]]":
        return self._submit("get_many", (session_ids,), {})

    def update(self, session_id: str, **fields: Any) -> "Deferred[SessionRecord | None]":
        return self._submit("update", (session_id,), fields)

    def touch(self, session_id: str, *, proved_at: float, last_seen: float, client_ip: str,
              long_grace: float) -> "Deferred[SessionRecord | None]":
        return self._submit("touch", (session_id,), {"proved_at": proved_at, "last_seen": last_seen,
                                                     "client_ip": client_ip, "long_grace": long_grace})

    def delete(self, session_id: str) -> "Deferred[bool]":
        return self._submit("delete", (session_id,), {})

    def list(self) -> "Deferred[list[SessionRecord]]":
        return self._submit("list", (), {})

    def delete_where(self, *, account: str | None = None,
                     fingerprint: str | None = None) -> "Deferred[builtins.list[str]]":
        return self._submit("delete_where", (), {"account": account, "fingerprint": fingerprint})

    def incr_failure(self, key: str, now: float, window: float) -> "Deferred[int]":
        return self._submit("incr_failure", (key, now, window), {})

    def failures(self, key: str, now: float, window: float) -> "Deferred[int]":
        return self._submit("failures", (key, now, window), {})

    def reset_failures(self, key: str) -> "Deferred[None]":
        return self._submit("reset_failures", (key,), {})

    def use_totp_step(self, account: str, step: int) -> "Deferred[bool]":
        return self._submit("use_totp_step", (account, step), {})

    def consume_once(self, namespace: str, item_id: str, expires_at: float) -> "Deferred[bool]":
        return self._submit("consume_once", (namespace, item_id, expires_at), {})

    def stash(self, namespace: str, item_id: str, value: str, expires_at: float) -> "Deferred[None]":
        return self._submit("stash", (namespace, item_id, value, expires_at), {})

    def unstash(self, namespace: str, item_id: str, now: float) -> "Deferred[str | None]":
        return self._submit("unstash", (namespace, item_id, now), {})

    def take_slot(self, namespace: str, item_id: str, now: float, expires_at: float, cap: int) -> "Deferred[int]":
        return self._submit("take_slot", (namespace, item_id, now, expires_at, cap), {})

    def release_slot(self, namespace: str, item_id: str) -> "Deferred[None]":
        return self._submit("release_slot", (namespace, item_id), {})

    def purge(self, now: float) -> "Deferred[int]":
        return self._submit("purge", (now,), {})

    def ping(self) -> "Deferred[None]":
        return self._submit("ping", (), {})

    def close(self) -> "Deferred[None]":
        raise NotImplementedError


class ImmediateStore(_EngineStore):
    """An in-process engine as an :class:`ISessionStore`: each call runs now on the calling thread."""

    engine: BlockingStore

    def __init__(self, engine: BlockingStore, name: str, clock: Clock | None = None) -> None:
        if clock is None:
            from twisted.internet.task import Clock
            clock = Clock()  # latency of an in-process dict is not worth a real clock
        super().__init__(engine, name, StoreMonitor(clock, name))

    def _submit(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> "Deferred[Any]":
        try:
            d = succeed(getattr(self.engine, op)(*args, **kwargs))
        except Exception:
            d = fail()
        return self.monitor.watch(op, d)

    def close(self) -> "Deferred[None]":
        self.engine.close()
        return succeed(None)


class ThreadedStore(_EngineStore):
    """A blocking engine on one dedicated worker thread, with a bounded queue and a deadline.

    ``reactor`` delivers results (``callFromThread``); ``clock`` times the deadline
    (``callLater``). The engine must tolerate being called from that thread (SQLite
    connections are opened with ``check_same_thread=False``). Guarantees: the reactor thread
    never waits for the engine; every Deferred fires within ``deadline`` seconds of the call
    (with StoreError when late, when the queue is full, or after close). Does not guarantee
    that an operation reported late did not happen: callers treat late writes as unknown.
    """

    engine: BlockingStore

    def __init__(self, engine: BlockingStore, name: str, *, reactor: ThreadingClock, clock: Clock | None = None,
                 deadline: float = DEFAULT_DEADLINE, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        super().__init__(engine, name, StoreMonitor(clock or reactor, name))
        self._reactor = reactor
        self._clock = clock or reactor
        self.deadline = float(deadline)
        self.max_queue = int(max_queue)
        self.pending = 0
        self._closed = False
        self._lock = threading.Lock()
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"certgate-{self.kind}-store")
        self._pool.start()

    def _submit(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> "Deferred[Any]":
        if self._closed:
            return self.monitor.watch(op, fail(StoreError(f"{self.name}: used after close()")))
        if self.pending >= self.max_queue:
            return self.monitor.watch(op, fail(StoreError(
                f"{self.name}: {self.pending} operations already waiting (queue full)")))
        self.pending += 1
        d: Deferred[Any] = Deferred()
        timer = self._clock.callLater(self.deadline, self._late, d, op)

        def finish(ok: bool, value: Any) -> None:
            self.pending -= 1
            if timer.active():
                timer.cancel()
            if d.called:  # reported late already: the result is dropped
                return
            if ok:
                d.callback(value)
            else:
                d.errback(value)

        def on_result(ok: bool, value: Any) -> None:  # runs on the worker thread
            self._reactor.callFromThread(finish, ok, value)

        self._pool.callInThreadWithCallback(on_result, self._in_thread, time.monotonic() + self.deadline,
                                            getattr(self.engine, op), *args, **kwargs)
        return self.monitor.watch(op, d)

    def _in_thread(self, until: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # An operation whose caller was already told "late" is not started (no late writes).
        if time.monotonic() > until:
            raise StoreError(f"{self.name}: dropped, its deadline passed while it waited in the queue")
        return fn(*args, **kwargs)

    def _late(self, d: "Deferred[Any]", op: str) -> None:
        if not d.called:
            d.errback(StoreError(f"{self.name}: {op} did not finish within {self.deadline:g} s"))

    def close(self) -> "Deferred[None]":
        """Stop taking operations; the worker finishes its queue, then the engine is closed.
        Blocks until the worker thread has stopped (call at shutdown only)."""
        if not self._closed:
            self._closed = True
            self._pool.callInThread(self.engine.close)
            self._pool.stop()
        return succeed(None)
