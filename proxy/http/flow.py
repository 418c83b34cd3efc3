"""Flow control and deadlines of one client connection (:class:`Flow`, a part the connection holds).

- Reading from the client is paused for a *set* of reasons (``P_*`` bits) and resumes only when
  none is left: request bytes buffered ahead, a full upstream write buffer, a pending
  decision, bytes held around an upgrade.
- All deadlines of a connection share one lazily re-armed timer: ``arm(kind, seconds)`` only
  stores the deadline; the timer fires at the earliest one and re-arms itself if the deadline
  moved later meanwhile. So a keep-alive request costs a clock read, not a new DelayedCall.
  When a deadline passes, the connection's ``deadline(kind)`` decides what it means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock, DelayedCall
    from proxy.http.parts import Host, Pausable

# Deadline kinds.
K_NONE, K_HANDSHAKE, K_HEADER, K_IDLE, K_BODY, K_UPSTREAM = range(6)
# Reasons to stop reading from the client (bit set).
P_BUFFER, P_UPSTREAM, P_DECIDE, P_RAW = 1, 2, 4, 8


class Flow:
    """A :class:`proxy.http.parts.FlowControl`: the pause reasons and the one deadline of a connection.

    Guarantees: the client transport is paused exactly while at least one reason is set (and
    the connection is not stopped); at most one DelayedCall exists per connection; nothing
    fires after :meth:`stop`. Does not know what a deadline means (the host does).
    """

    __slots__ = ("_host", "_clock", "_transport", "paused", "write_paused", "_timer", "_dl", "kind", "_stopped")

    def __init__(self, host: "Host", clock: "Clock") -> None:
        self._host = host
        self._clock = clock
        self._transport: Pausable | None = None
        self.paused = 0
        self.write_paused = False
        self._timer: DelayedCall | None = None
        self._dl = 0.0
        self.kind = K_NONE
        self._stopped = False

    def attach(self, transport: "Pausable") -> None:
        """Pause and resume ``transport``'s reading from now on."""
        self._transport = transport

    # ------------------------------------------------------------------ reading control
    def pause(self, bit: int) -> None:
        if not self.paused and not self._stopped and self._transport is not None:
            self._transport.pauseProducing()
        self.paused |= bit

    def resume(self, bit: int) -> None:
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self._stopped and self._transport is not None:
                self._transport.resumeProducing()

    # ------------------------------------------------------------------ deadlines
    def arm(self, kind: int, seconds: float) -> None:
        """The deadline is now ``kind`` in ``seconds`` (replacing any other)."""
        clock = self._clock
        self._dl = clock.seconds() + seconds
        self.kind = kind
        t = self._timer
        if t is None:
            self._timer = clock.callLater(seconds, self._on_timer)
        elif t.getTime() > self._dl:
            t.reset(seconds)

    def disarm(self) -> None:
        """No deadline (the timer, if any, finds nothing to do when it fires)."""
        self.kind = K_NONE

    def stop(self) -> None:
        """The connection is gone: cancel the timer; never pause or resume the transport again."""
        self._stopped = True
        self.kind = K_NONE
        t, self._timer = self._timer, None
        if t is not None and t.active():
            t.cancel()

    def _on_timer(self) -> None:
        self._timer = None
        kind = self.kind
        if kind == K_NONE or self._stopped:
            return
        now = self._clock.seconds()
        if now < self._dl:
            self._timer = self._clock.callLater(self._dl - now, self._on_timer)
            return
        self.kind = K_NONE
        self._host.deadline(kind)
