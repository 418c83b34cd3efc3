"""What the listener's parts need of the clock, as Protocols (typing only).

The gateway passes the reactor; unit tests pass ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IDelayedCall


class Clock(Protocol):
    """Epoch seconds."""

    def seconds(self) -> float: ...


class TimerClock(Clock, Protocol):
    """Epoch seconds and delayed calls."""

    def callLater(self, delay: float, callable: Callable[..., object], *args: object,  # noqa: N802
                  **kw: object) -> "IDelayedCall": ...
