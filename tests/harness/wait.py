"""Waiting with deadlines: polling a condition, free loopback ports, a monotonic stopwatch.

Tests never sleep for a fixed time to let something happen; they poll a condition with a
deadline (:func:`wait_for`). Waiting uses ``threading.Event().wait``, which a test cannot
mistake for a condition that came true.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")

monotonic = time.monotonic


def wait_for(cond: Callable[[], T], timeout: float = 10.0, what: str = "condition", *,
             interval: float = 0.05) -> T:
    """Poll ``cond`` every ``interval`` s until it returns a true value, and return that value.

    Guarantees: AssertionError naming ``what`` (and the last exception ``cond`` raised, if any)
    once ``timeout`` seconds have passed without a true value. An exception from ``cond`` counts
    as "not yet" (a system that is still settling may refuse a connection); it is not re-raised.
    """
    deadline = time.monotonic() + timeout
    ev = threading.Event()
    last_exc: BaseException | None = None
    while True:
        try:
            val = cond()
            if val:
                return val
        except Exception as e:  # conditions may raise while the system settles
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        ev.wait(interval)


def pause(seconds: float) -> None:
    """Let ``seconds`` of real time pass (only where the point is that time passes: a grace
    period that must run out). Not for waiting until something happens: use :func:`wait_for`."""
    threading.Event().wait(seconds)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (not reserved: another process may take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds now (it is closed at once)."""
    try:
        socket.create_connection((host, port), timeout).close()
        return True
    except OSError:
        return False


class Timer:
    """Monotonic seconds since construction, rounded to 10 ms (for reports of what took how long)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.t0, 2)
