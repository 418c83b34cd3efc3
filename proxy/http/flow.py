"""Flow control and deadlines of :class:`proxy.http.connection.GatewayProtocol`.

- Reading from the client is paused for a *set* of reasons (``P_*`` bits) and resumes only when
  none is left: request bytes buffered ahead, a full upstream write buffer, a pending
  decision, bytes held around an upgrade.
- The protocol is the streaming producer of its own transport: a full client write buffer
  pauses the upstream read (``pauseProducing``), and resuming resumes it.
- All deadlines of a connection share one lazily re-armed timer: ``_arm(kind, seconds)`` only
  stores the deadline; the timer fires at the earliest one and re-arms itself if the deadline
  moved later meanwhile. So a keep-alive request costs a clock read, not a new DelayedCall.
"""

from __future__ import annotations

from typing import Any

# Deadline kinds.
K_NONE, K_HANDSHAKE, K_HEADER, K_IDLE, K_BODY, K_UPSTREAM = range(6)
# Reasons to stop reading from the client (bit set).
P_BUFFER, P_UPSTREAM, P_DECIDE, P_RAW = 1, 2, 4, 8


class FlowMixin:
    """Methods mixed into GatewayProtocol; they use its attributes (see proxy.http.connection)."""

    __slots__ = ()
    _paused: int
    _write_paused: bool
    _up: Any
    gone: bool
    transport: Any
    _clock: Any
    _timer: Any
    _dl: float
    _dl_kind: int

    # ------------------------------------------------------------------ producer (client writes)
    def pauseProducing(self) -> None:
        self._write_paused = True
        if self._up is not None:
            self._up.pause_reading()

    def resumeProducing(self) -> None:
        self._write_paused = False
        if self._up is not None:
            self._up.resume_reading()

    def stopProducing(self) -> None:
        pass

    # ------------------------------------------------------------------ reading control
    def _pause(self, bit: int) -> None:
        if not self._paused and not self.gone:
            self.transport.pauseProducing()
        self._paused |= bit

    def _resume(self, bit: int) -> None:
        if self._paused & bit:
            self._paused &= ~bit
            if not self._paused and not self.gone:
                self.transport.resumeProducing()

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self._pause(P_UPSTREAM)
        else:
            self._resume(P_UPSTREAM)

    # ------------------------------------------------------------------ deadlines
    def _arm(self, kind: int, seconds: float) -> None:
        clock = self._clock
        self._dl = clock.seconds() + seconds
        self._dl_kind = kind
        t = self._timer
        if t is None:
            self._timer = clock.callLater(seconds, self._on_timer)
        elif t.getTime() > self._dl:
            t.reset(seconds)

    def _on_timer(self) -> None:
        self._timer = None
        kind = self._dl_kind
        if kind == K_NONE or self.gone:
            return
        now = self._clock.seconds()
        if now < self._dl:
            self._timer = self._clock.callLater(self._dl - now, self._on_timer)
            return
        self._dl_kind = K_NONE
        if kind == K_HANDSHAKE:
            self.abort()  # type: ignore[attr-defined]
        elif kind == K_IDLE:
            self._close()  # type: ignore[attr-defined]
        elif kind == K_HEADER:
            self._error_now(408)  # type: ignore[attr-defined]
        elif kind == K_BODY:
            self._timeout_body()  # type: ignore[attr-defined]
        else:
            self._timeout_upstream()  # type: ignore[attr-defined]

    def _timeout_body(self) -> None:
        self._fail_active(408)

