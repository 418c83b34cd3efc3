"""The global Twisted reactor running in a background thread, for tests of asynchronous parts
that need real I/O (an SQLite worker thread, a Redis connection).

``blocking(fn, *args)`` runs ``fn`` on the reactor thread and waits for its result (a
Deferred is waited for); exceptions are raised in the caller. ``resolve(d)`` returns the
result of an already fired Deferred (immediate stores) or raises its failure.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

_lock = threading.Lock()
_thread: threading.Thread | None = None


def reactor_running() -> Any:
    """Start the global reactor in a daemon thread once; return it."""
    global _thread
    from twisted.internet import reactor as installed

    reactor: Any = installed  # the installed reactor provides more interfaces than its declared type

    with _lock:
        if _thread is None:
            ready = threading.Event()
            reactor.callWhenRunning(ready.set)
            _thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                       name="test-reactor", daemon=True)
            _thread.start()
            if not ready.wait(30):
                raise RuntimeError("the test reactor did not start within 30 s")
            atexit.register(lambda: reactor.callFromThread(reactor.stop))
    return reactor


def blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on the reactor thread; its (Deferred's) result here."""
    from twisted.internet.threads import blockingCallFromThread

    return blockingCallFromThread(reactor_running(), fn, *args, **kwargs)


def resolve(d: Any) -> Any:
    """The result of a Deferred that has already fired; raises its exception; fails if it has not fired."""
    from twisted.internet.defer import Deferred

    if not isinstance(d, Deferred):
        return d
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, f"{d!r} has not fired"
    res = out[0]
    from twisted.python.failure import Failure

    if isinstance(res, Failure):
        res.raiseException()
    return res


class Blocking:
    """A blocking view of an asynchronous store: ``Blocking(store, call).get(x)`` is
    ``call(store.get, x)`` (``call`` is :func:`blocking` or a resolve-after-call)."""

    def __init__(self, store: Any, call: Any = None) -> None:
        self.store = store
        self._call = call or (lambda fn, *a, **kw: resolve(fn(*a, **kw)))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr
        return lambda *a, **kw: self._call(attr, *a, **kw)
