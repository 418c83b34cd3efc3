"""Flow control and deadlines of one client connection (:class:`Flow`, a part the connection holds).

- Reading from the client is paused for a *set* of reasons (``P_*`` bits) and resumes only when
  none is left: request bytes buffered ahead, a full upstream write buffer, a pending
  decision, bytes held around an upgrade.
- A connection has one deadline at a time, kept in the gateway's shared
  :class:`~proxy.timerwheel.TimerWheel` (one reactor timer for every connection, no
  ``DelayedCall`` per connection). ``arm(kind, seconds)`` stores the deadline and moves the
  connection's wheel entry only when the deadline came *earlier*; a later one is picked up
  lazily when the old bucket's time comes. So a keep-alive request costs a clock read.
  When a deadline passes (at most one wheel tick late, never early), the connection's
  ``deadline(kind)`` decides what it means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock
    from proxy.http.parts import Host, Pausable
    from proxy.timerwheel import TimerWheel

# Deadline kinds.
K_NONE, K_HANDSHAKE, K_HEADER, K_IDLE, K_BODY, K_UPSTREAM = range(6)
# Reasons to stop reading from the client (bit set).
P_BUFFER, P_UPSTREAM, P_DECIDE, P_RAW = 1, 2, 4, 8


class Flow:
    """A :class:`proxy.http.parts.FlowControl`: the pause reasons and the one deadline of a connection.

    Guarantees: the client transport is paused exactly while at least one reason is set (and
    the connection is not stopped); at most one wheel entry exists per connection; nothing
    fires after :meth:`stop`; a deadline is never reported before its time. Does not know
    what a deadline means (the host does).
    """

    __slots__ = ("_host", "_clock", "_wheel", "_transport", "paused", "write_paused", "_key", "_dl", "kind",
                 "_stopped")

    def __init__(self, host: "Host", clock: "Clock", wheel: "TimerWheel") -> None:
        self._host = host
        self._clock = clock
        self._wheel = wheel
        self._transport: Pausable | None = None
        self.paused = 0
        self.write_paused = False
        self._key = -1  # the wheel bucket holding this connection (-1: none)
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
        if self._stopped:
            return
        dl = self._clock.seconds() + seconds
        self._dl = dl
        self.kind = kind
        key = self._key
        wheel = self._wheel
        if key < 0:
            self._key = wheel.add(self, dl)
        elif wheel.key_for(dl) < key:
            self._key = wheel.move(self, key, dl)

    def disarm(self) -> None:
        """No deadline (the wheel entry, if any, finds nothing to do when its time comes)."""
        self.kind = K_NONE

    def stop(self) -> None:
        """The connection is gone: leave the wheel; never pause or resume the transport again."""
        self._stopped = True
        self.kind = K_NONE
        key, self._key = self._key, -1
        if key >= 0:
            self._wheel.discard(self, key)

    def expire(self, now: float) -> None:
        """The wheel's call: report the deadline if it passed, else wait for it again."""
        self._key = -1
        kind = self.kind
        if kind == K_NONE or self._stopped:
            return
        if now < self._dl:
            self._key = self._wheel.add(self, self._dl)
            return
        self.kind = K_NONE
        self._host.deadline(kind)
