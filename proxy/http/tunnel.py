"""WebSocket tunnels: the validated-101 check, the byte splice, and the registry that closes them.

After a genuine ``101 Switching Protocols`` (``Sec-WebSocket-Accept`` equal to
base64(sha1(key + GUID))) the HTTP layer hands both connections to a :class:`WebSocketTunnel`,
which only moves bytes. It watches the frame boundaries of the upstream -> client direction
(cheaply: headers only) so that certgate can inject its own close frame (1008 session ended,
1001 going away) without cutting a frame in half. The :class:`TunnelRegistry` indexes live
tunnels by trusted session and by certificate fingerprint so the session manager and a
trust-store reload can close them.

Nothing here parses or checks WebSocket payloads; masking of client frames is the client's
business and is passed through untouched.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import TYPE_CHECKING, Callable, Protocol

from twisted.logger import Logger

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock, DelayedCall

log = Logger(namespace="certgate.tunnel")

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value a server must answer to ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest())


def valid_ws_key(key: bytes) -> bool:
    """True if ``key`` is base64 of exactly 16 bytes (RFC 6455 §4.1)."""
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (ValueError, TypeError):
        return False


def close_frame(code: int, reason: str = "", mask: bytes | None = None) -> bytes:
    """A WebSocket close frame; unmasked (server -> client) unless ``mask`` (4 bytes) is given.

    The reason is truncated so the payload stays within the 125-byte control-frame limit.
    """
    payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    if mask is None:
        return bytes((0x88, len(payload))) + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + mask + masked


class FrameTracker:
    """Follows frame boundaries in one direction of a WebSocket stream (headers only).

    ``feed(data)`` accounts for ``data``; ``at_boundary`` is True when the bytes seen so far end
    exactly at the end of a frame. Payloads are skipped by length, never copied.
    """

    __slots__ = ("_remaining", "_hdr")

    def __init__(self) -> None:
        self._remaining = 0  # payload bytes still to come in the current frame
        self._hdr = b""  # a partial frame header carried over

    @property
    def at_boundary(self) -> bool:
        return self._remaining == 0 and not self._hdr

    def feed(self, data: bytes) -> None:
        n = len(data)
        if n <= self._remaining:  # fast path: inside a large payload
            self._remaining -= n
            return
        pos = self._remaining
        self._remaining = 0
        if self._hdr:
            data = self._hdr + data[pos:]
            pos = 0
            self._hdr = b""
            n = len(data)
        while pos < n:
            if n - pos < 2:
                self._hdr = data[pos:]
                return
            b1 = data[pos + 1]
            ln = b1 & 0x7F
            hlen = 2 + (4 if b1 & 0x80 else 0)
            if ln == 126:
                hlen += 2
            elif ln == 127:
                hlen += 8
            if n - pos < hlen:
                self._hdr = data[pos:]
                return
            if ln == 126:
                ln = struct.unpack_from("!H", data, pos + 2)[0]
            elif ln == 127:
                ln = struct.unpack_from("!Q", data, pos + 2)[0]
            pos += hlen
            if n - pos < ln:
                self._remaining = ln - (n - pos)
                return
            pos += ln


class TunnelEnd(Protocol):
    """What a tunnel needs from each side: write bytes, close, and flow control."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...


class WebSocketTunnel:
    """A spliced client <-> upstream byte stream after a validated 101.

    ``client`` and ``upstream`` are transports. ``from_client`` / ``from_upstream`` relay bytes.
    ``close(code, reason)`` stops relaying client bytes, lets the current upstream frame finish
    (at most ``close_grace`` seconds), then sends the close frame to the client and closes both.
    ``on_closed`` runs exactly once when the tunnel ends, however it ends.
    """

    def __init__(self, client: TunnelEnd, upstream: TunnelEnd, clock: "Clock", *,
                 close_grace: float = 2.0, on_closed: Callable[["WebSocketTunnel"], None] | None = None,
                 idle_timeout: float = 0.0) -> None:
        self.client = client
        self.upstream = upstream
        self._clock = clock
        self._tracker = FrameTracker()  # upstream -> client
        self._up_tracker = FrameTracker()  # client -> upstream
        self._closing: tuple[int, str] | None = None
        self._closed = False
        self._grace = close_grace
        self._grace_call: DelayedCall | None = None
        self._on_closed = on_closed
        self._idle = idle_timeout
        self._last = clock.seconds() if idle_timeout else 0.0
        self._idle_call = clock.callLater(idle_timeout, self._check_idle) if idle_timeout else None
        self.session_id: str | None = None
        self.fingerprint: str | None = None
        self.observer: Callable[[bytes], None] | None = None  # sees client bytes, never changes them

    # -- data
    def from_client(self, data: bytes) -> None:
        if self._closing is None and not self._closed:
            if self._idle:
                self._last = self._clock.seconds()
            self._up_tracker.feed(data)
            self.upstream.write(data)
            if self.observer is not None:
                try:
                    self.observer(data)
                except Exception:  # a broken observer must not break the tunnel
                    log.failure("tunnel observer failed; it is detached")
                    self.observer = None

    def from_upstream(self, data: bytes) -> None:
        if self._closed:
            return
        if self._idle:
            self._last = self._clock.seconds()
        tracker = self._tracker
        if self._closing is None:
            tracker.feed(data)
            self.client.write(data)
            return
        # Closing: pass only the rest of the current frame, then send our close frame.
        rem = tracker._remaining
        if rem:
            part = data[:rem]
            tracker.feed(part)
            self.client.write(part)
        if tracker.at_boundary:
            self._finish_close()

    # -- closing
    def close(self, code: int = 1008, reason: str = "session ended") -> None:
        """Close the tunnel with a close frame ``code`` + ``reason`` to the client."""
        if self._closed or self._closing is not None:
            return
        self._closing = (code, reason)
        if self._tracker.at_boundary:
            self._finish_close()
        else:
            self._grace_call = self._clock.callLater(self._grace, self._grace_expired)

    def _grace_expired(self) -> None:
        self._grace_call = None
        if not self._closed:  # a frame never finished: cut without a close frame
            self.client.abortConnection()
            self.upstream.abortConnection()
            self.lost()

    def _finish_close(self) -> None:
        code, reason = self._closing or (1001, "going away")
        self.client.write(close_frame(code, reason))
        self.client.loseConnection()
        if self._up_tracker.at_boundary:  # never cut into a frame the client was sending
            self.upstream.write(close_frame(code, reason, mask=b"\x00\x00\x00\x00"))
        self.upstream.loseConnection()
        self.lost()

    def _check_idle(self) -> None:
        self._idle_call = None
        if self._closed or self._closing is not None:
            return
        now = self._clock.seconds()
        due = self._last + self._idle
        if now >= due:
            self.close(1001, "idle timeout")
        else:
            self._idle_call = self._clock.callLater(due - now, self._check_idle)

    def lost(self) -> None:
        """Either side went away (or we closed): stop timers, unregister. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for call in (self._grace_call, self._idle_call):
            if call is not None and call.active():
                call.cancel()
        self._grace_call = self._idle_call = None
        if self._on_closed is not None:
            cb, self._on_closed = self._on_closed, None
            cb(self)

    @property
    def closed(self) -> bool:
        return self._closed


class ClosableTunnel(Protocol):
    def close(self, code: int = ..., reason: str = ...) -> None: ...


class TunnelRegistry:
    """Live tunnels by trusted session id and by client-certificate fingerprint.

    A tunnel must call :meth:`remove` when it ends (``WebSocketTunnel`` does through the
    ``on_closed`` hook the HTTP layer sets). The ``close_*`` methods return how many tunnels
    they asked to close; closing is asynchronous only if a frame is still in flight.
    """

    def __init__(self) -> None:
        self._all: dict[ClosableTunnel, tuple[str | None, str | None]] = {}
        self._by_session: dict[str, set[ClosableTunnel]] = {}
        self._by_fp: dict[str, set[ClosableTunnel]] = {}

    def add(self, session_id: str | None, fingerprint: str | None, tunnel: ClosableTunnel) -> None:
        self._all[tunnel] = (session_id, fingerprint)
        if session_id is not None:
            self._by_session.setdefault(session_id, set()).add(tunnel)
        if fingerprint is not None:
            self._by_fp.setdefault(fingerprint, set()).add(tunnel)

    def remove(self, tunnel: ClosableTunnel) -> None:
        keys = self._all.pop(tunnel, None)
        if keys is None:
            return
        sid, fp = keys
        for index, key in ((self._by_session, sid), (self._by_fp, fp)):
            if key is not None and key in index:
                index[key].discard(tunnel)
                if not index[key]:
                    del index[key]

    def _close(self, tunnels: list[ClosableTunnel], code: int, reason: str) -> int:
        for t in tunnels:
            self.remove(t)
            t.close(code, reason)
        return len(tunnels)

    def close_session(self, session_id: str, code: int = 1008, reason: str = "session ended") -> int:
        return self._close(list(self._by_session.get(session_id, ())), code, reason)

    def close_fingerprint(self, fingerprint: str, code: int = 1008,
                          reason: str = "certificate no longer trusted") -> int:
        return self._close(list(self._by_fp.get(fingerprint, ())), code, reason)

    def close_all(self, code: int = 1001, reason: str = "going away") -> int:
        return self._close(list(self._all), code, reason)

    def count(self) -> int:
        return len(self._all)
