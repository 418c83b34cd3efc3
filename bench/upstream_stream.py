"""Plain-HTTP upstream for the streaming phases of the benchmark (stdlib asyncio only).

Usage: python upstream_stream.py PORT        (binds 127.0.0.1:PORT, runs until SIGTERM)

Routes (HTTP/1.1, keep-alive):
  GET  /ws with ``Upgrade: websocket``  answers 101 with the RFC 6455 accept value and
                                        echoes every data frame back unmasked
  GET  /big?bytes=N                     sends N bytes with Content-Length, in 1 MiB writes
  POST /upload                          reads the body (Content-Length or chunked) and
                                        answers 200 with the number of bytes received
  anything else                         200 "hello\\n"

It is the same upstream for every proxy, so what differs between two runs is the
proxy. It checks what the benchmark needs and no more: it is not a general server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import signal
import sys
from urllib.parse import parse_qs, urlsplit

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CHUNK = memoryview(b"\xa5" * (1 << 20))
MAX_HEAD = 65536


class BadRequest(Exception):
    """The peer sent something this server does not speak; the connection is closed."""


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """One request head -> (method, target, lower-cased headers); None at a clean EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise BadRequest("connection closed inside a request head") from e
    except asyncio.LimitOverrunError as e:
        raise BadRequest("request head longer than %d bytes" % MAX_HEAD) from e
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest("bad request line %r" % lines[0][:80])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return parts[0], parts[1], headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> int:
    """Consume the request body and return its length in bytes."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return total
            left = size
            while left:
                left -= len(await reader.read(min(left, 1 << 20)))
            await reader.readexactly(2)
            total += size
    left = int(headers.get("content-length", "0"))
    total = left
    while left:
        data = await reader.read(min(left, 1 << 20))
        if not data:
            raise BadRequest("body ended %d bytes early" % left)
        left -= len(data)
    return total


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client frame's payload with its 4-byte mask (whole-buffer integer XOR)."""
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked server frame with FIN set."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


async def websocket_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         headers: dict[str, str]) -> None:
    """Answer the upgrade, then echo frames until a close frame or EOF."""
    key = headers.get("sec-websocket-key", "").encode()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    while True:
        try:
            b0, b1 = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            return
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
        payload = unmask(await reader.readexactly(n), mask)
        opcode = b0 & 0x0F
        if opcode == 0x8:
            writer.write(frame(0x8, payload[:2]))
            await writer.drain()
            return
        writer.write(frame(0xA if opcode == 0x9 else opcode, payload))
        await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await read_head(reader)
            if head is None:
                return
            method, target, headers = head
            url = urlsplit(target)
            if headers.get("upgrade", "").lower() == "websocket":
                await websocket_echo(reader, writer, headers)
                return
            if method == "GET" and url.path == "/big":
                n = int(parse_qs(url.query).get("bytes", ["0"])[0])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % n)
                while n > 0:
                    writer.write(CHUNK[:min(n, len(CHUNK))])
                    n -= len(CHUNK)
                    await writer.drain()
            elif method in ("POST", "PUT"):
                body = str(await read_body(reader, headers)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
            else:
                await read_body(reader, headers)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n")
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (BadRequest, ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
        print("upstream_stream: %s: %s" % (type(e).__name__, e), file=sys.stderr, flush=True)
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=MAX_HEAD, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(main(int(sys.argv[1])))
