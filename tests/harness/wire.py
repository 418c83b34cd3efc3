"""HTTP/1.1 and WebSocket on the wire, for test clients and upstreams that speak raw bytes.

- :class:`Reader`: buffered reads from a blocking socket (until a marker, exactly N bytes).
- :func:`parse_head`, :func:`read_body`: a message head as sent (names in their case and
  order) and a body by its framing (Content-Length or chunked).
- :func:`ws_frame`, :func:`read_ws_frame`, :func:`ws_accept`: WebSocket frames (RFC 6455).
- :func:`pattern`: the deterministic byte stream the recording upstream's ``/bytes/N`` sends.

Nothing here validates a message beyond what it needs to find its end: tests send broken
messages on purpose, and these helpers must pass them through.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from typing import Any, Callable, Iterator

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_BLOCK = bytes(range(256)) * 4096  # 1 MiB


def pattern(n: int) -> Iterator[bytes]:
    """The deterministic byte stream ``/bytes/N`` sends, in blocks of at most 1 MiB."""
    while n > 0:
        k = min(n, len(_BLOCK))
        yield _BLOCK[:k]
        n -= k


def pattern_sha256(n: int) -> str:
    """SHA-256 (hex) of the first ``n`` bytes of :func:`pattern`."""
    h = hashlib.sha256()
    for b in pattern(n):
        h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------- raw HTTP reading

class Reader:
    """Buffered reads from a blocking socket (or TLS socket); ``None``/``b""`` at EOF, never a partial item."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(262144)
        if not data:
            return False
        self.buf += data
        return True

    def until(self, marker: bytes, limit: int = 1 << 20) -> bytes | None:
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[:i + len(marker)])
                del self.buf[:i + len(marker)]
                return out
            if len(self.buf) > limit or not self._fill():
                return None

    def exactly(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def some(self, n: int) -> bytes:
        if not self.buf and not self._fill():
            return b""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def parse_head(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(start line, [(name, value)]) of a head ending in CRLFCRLF; names keep their case and order."""
    lines = raw[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers.append((k, v.strip()))
    return lines[0], headers


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case), or None."""
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def read_body(rd: Reader, headers: list[tuple[bytes, bytes]], sink: Callable[[bytes], Any]) -> int:
    """Read a request/response body by its framing into ``sink(bytes)``; return its length."""
    te = header_value(headers, b"transfer-encoding")
    total = 0
    if te is not None and te.lower() == b"chunked":
        while True:
            line = rd.until(b"\r\n")
            if line is None:
                raise EOFError("eof in chunk size")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while True:  # trailers
                    t = rd.until(b"\r\n")
                    if t is None or t == b"\r\n":
                        return total
            total += _copy(rd, size, sink, "eof in chunk")
            if rd.exactly(2) != b"\r\n":
                raise EOFError("bad chunk end")
    cl = header_value(headers, b"content-length")
    if cl is not None:
        total += _copy(rd, int(cl), sink, "eof in body")
    return total


def _copy(rd: Reader, n: int, sink: Callable[[bytes], Any], what: str) -> int:
    """Pass exactly ``n`` bytes from ``rd`` to ``sink``; EOFError(``what``) if they do not come."""
    left = n
    while left:
        part = rd.some(min(left, 262144))
        if not part:
            raise EOFError(what)
        sink(part)
        left -= len(part)
    return n


# --------------------------------------------------------------------------- WebSocket frames

def ws_frame(opcode: int, payload: bytes, mask: bool = True, fin: bool = True) -> bytes:
    """One WebSocket frame (masked as a client must, unless ``mask`` is False)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = bytes((b0, mbit | n))
    elif n < 65536:
        hdr = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        hdr = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_ws_frame(rd: Reader) -> tuple[int, bytes] | None:
    """(opcode, payload) of the next frame, unmasking if needed; None at EOF."""
    h = rd.exactly(2)
    if h is None:
        return None
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", rd.exactly(2) or b"\0\0")[0]
    elif n == 127:
        n = struct.unpack("!Q", rd.exactly(8) or b"\0" * 8)[0]
    key = rd.exactly(4) if h[1] & 0x80 else None
    payload = rd.exactly(n) if n else b""
    if payload is None:
        return None
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return h[0] & 0x0F, payload


def ws_accept(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
