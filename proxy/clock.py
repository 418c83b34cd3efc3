"""Time in certgate: the one clock seam, and how a time is written.

Every part that reads the time or waits takes a :class:`Clock`: the reactor in the gateway,
``twisted.internet.task.Clock`` in unit tests. :class:`ThreadingClock` is that clock when it
also takes work back from other threads (the reactor, for the stores' worker threads).
:func:`rfc3339` is the one way a time appears in logs, audit records and the admin API.

This module imports nothing of certgate, so any layer may use it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

__all__ = ["Clock", "DelayedCall", "ThreadingClock", "rfc3339"]


class DelayedCall(Protocol):
    """What certgate uses of ``IDelayedCall`` (what :meth:`Clock.callLater` returns)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...

    def reset(self, secondsLater: float) -> None: ...  # noqa: N803 (Twisted's name)

    def getTime(self) -> float: ...  # noqa: N802 (Twisted's name)


class Clock(Protocol):
    """The reactor's time (``IReactorTime``): now in epoch seconds, and a call later.

    Every deadline and timer in the gateway goes through one of these, so unit tests drive
    them with ``twisted.internet.task.Clock``. A part that only reads the time uses
    :meth:`seconds` alone.
    """

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any,  # noqa: N802
                  **kw: Any) -> DelayedCall: ...


class ThreadingClock(Clock, Protocol):
    """A clock that also takes work back from other threads (the reactor, for thread pools)."""

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kw: Any) -> None: ...  # noqa: N802


def rfc3339(ts: float) -> str:
    """``ts`` (epoch seconds) as RFC 3339 UTC with milliseconds, e.g. ``2026-12-01T21:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % int((ts % 1) * 1000)
