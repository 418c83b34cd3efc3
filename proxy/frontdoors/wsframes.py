"""Spot Cockpit's logout control message in the client -> cockpit-ws WebSocket byte stream.

Cockpit's shell logs out by sending, on the ``/cockpit/socket`` WebSocket, one text message
``"\\n" + {"command": "logout", "disconnect": true}`` (control channel = empty channel id).
cockpit-ws then disposes of its session; certgate should end its trusted session too.

:class:`ClientFrameParser` is an incremental RFC 6455 parser for the client direction
(masked frames). It copies only small *text* payloads that can be control messages (at most
:data:`MAX_CONTROL_MESSAGE` bytes, fragmented or not); every other payload is skipped by
length, so watching a tunnel costs a header parse per frame. Compressed frames (RSV1) are
skipped: cockpit-ws 287 negotiates no extension. :class:`LogoutWatcher` feeds bytes to the
parser and calls ``on_logout()`` once when a logout control message is seen.

It never changes the bytes; a protocol error makes the watcher stop watching (the tunnel
itself is not this module's business).
"""

from __future__ import annotations

import json
from typing import Callable

#: Largest text message copied for inspection (a logout message is ~40 bytes).
MAX_CONTROL_MESSAGE = 4096

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE = 0x0, 0x1, 0x2, 0x8


class FrameProtocolError(Exception):
    """The byte stream is not a valid client WebSocket stream; the message says where."""


class ClientFrameParser:
    """Incremental parser of client -> server frames; ``feed`` returns complete small text messages.

    Guarantees: returns each unfragmented or reassembled text message whose total payload is
    at most ``max_message`` bytes, unmasked, in order; larger or binary messages are skipped
    without being buffered. Raises :class:`FrameProtocolError` on an unmasked client frame,
    a bad continuation, or a control frame longer than 125 bytes.
    """

    def __init__(self, max_message: int = MAX_CONTROL_MESSAGE) -> None:
        self._max = max_message
        self._hdr = b""
        self._remaining = 0  # payload bytes left in the current frame
        self._mask = b""
        self._pos = 0  # payload offset within the current frame (for unmasking)
        self._keep = False  # copying the current frame's payload
        self._fin = True
        self._msg: bytearray | None = None  # the text message being collected
        self._in_message = False  # inside a fragmented data message
        self._collect = False  # that message is a small text message
        self._control = False  # the current frame is a control frame (ping, pong, close)

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        view = memoryview(data)
        i, n = 0, len(data)
        while i < n:
            if self._remaining == 0:  # at a frame boundary: parse the next header
                need = self._header_need(self._hdr + bytes(view[i:min(n, i + 14)]))
                have = self._hdr + bytes(view[i:i + max(0, need - len(self._hdr))])
                if need == 0 or len(have) < need:
                    self._hdr = self._hdr + bytes(view[i:n])
                    return out
                i += need - len(self._hdr)
                self._hdr = b""
                self._start_frame(have)
                if self._remaining == 0:
                    done = self._end_frame()
                    if done is not None:
                        out.append(done)
                continue
            take = min(self._remaining, n - i)
            if self._keep:
                chunk = bytes(view[i:i + take])
                m = self._mask
                assert self._msg is not None
                self._msg.extend(b ^ m[(self._pos + k) % 4] for k, b in enumerate(chunk))
            self._pos += take
            self._remaining -= take
            i += take
            if self._remaining == 0:
                done = self._end_frame()
                if done is not None:
                    out.append(done)
        return out

    @staticmethod
    def _header_need(buf: bytes) -> int:
        """Bytes the header needs (0 if not yet known)."""
        if len(buf) < 2:
            return 0
        ln = buf[1] & 0x7F
        base = 2 + (2 if ln == 126 else 8 if ln == 127 else 0)
        return base + (4 if buf[1] & 0x80 else 0)

    def _start_frame(self, hdr: bytes) -> None:
        b0, b1 = hdr[0], hdr[1]
        fin, rsv, opcode = bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F
        if not b1 & 0x80:
            raise FrameProtocolError("client frame is not masked (RFC 6455 §5.1)")
        ln = b1 & 0x7F
        off = 2
        if ln == 126:
            ln = int.from_bytes(hdr[2:4], "big")
            off = 4
        elif ln == 127:
            ln = int.from_bytes(hdr[2:10], "big")
            off = 10
        self._mask = hdr[off:off + 4]
        self._remaining = ln
        self._pos = 0
        self._fin = fin
        if opcode >= 0x8:
            if ln > 125 or not fin:
                raise FrameProtocolError(f"control frame opcode {opcode:#x} of {ln} bytes or fragmented")
            self._keep = False
            self._control = True
            return
        self._control = False
        if opcode == OP_CONT:
            if not self._in_message:
                raise FrameProtocolError("continuation frame without a message to continue")
        else:
            if self._in_message:
                raise FrameProtocolError("new data frame while a fragmented message is open")
            self._in_message = True
            self._collect = opcode == OP_TEXT and not rsv
            self._msg = bytearray() if self._collect else None
        if self._collect and self._msg is not None and len(self._msg) + ln > self._max:
            self._collect = False
            self._msg = None
        self._keep = self._collect

    def _end_frame(self) -> bytes | None:
        self._keep = False
        if self._control:
            return None
        if not self._fin:
            return None
        self._in_message = False
        msg, self._msg = self._msg, None
        collect, self._collect = self._collect, False
        return bytes(msg) if collect and msg is not None else None


def is_logout(message: bytes) -> bool:
    """True for a Cockpit control message (empty channel) whose command is ``logout``."""
    if not message.startswith(b"\n"):
        return False
    try:
        obj = json.loads(message[1:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(obj, dict) and obj.get("command") == "logout"


class LogoutWatcher:
    """Feed it the client -> cockpit-ws bytes of one tunnel; calls ``on_logout()`` at most once."""

    def __init__(self, on_logout: Callable[[], None]) -> None:
        self._parser: ClientFrameParser | None = ClientFrameParser()
        self._on_logout = on_logout
        self.fired = False
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        if self._parser is None:
            return
        try:
            messages = self._parser.feed(data)
        except FrameProtocolError as e:
            self.error = str(e)
            self._parser = None  # stop watching; the bytes still flow
            return
        for m in messages:
            if not self.fired and is_logout(m):
                self.fired = True
                self._parser = None
                self._on_logout()
                return
