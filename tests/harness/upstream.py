"""The recording upstream: a real HTTP/1.1 and WebSocket server on loopback that records
exactly what reached it, for unit, black-box and browser tests.

:class:`RecordingUpstream` runs on threads with blocking sockets (it never touches a Twisted
reactor, so a test may run it next to the global reactor or a real gateway process). Every
request is recorded as a :class:`Received`: method, target, version, the raw headers in order
and case, the body's length and SHA-256 (and the body itself up to :data:`BODY_KEPT` bytes),
and the connection it came on.

By default it answers with that record as JSON (keys ``method``, ``target``/``path``, ``version``,
``headers``, ``body_len``, ``body_sha256``, ``conn_id``, ``body``), and these paths have special
answers: ``/bytes/N`` (N bytes of :func:`~tests.harness.wire.pattern`, ``?chunked=1`` or
``?close=1`` for other framings), ``/status/NNN``, ``/slow/SECONDS``, ``/headers`` (repeated and
hop-by-hop response headers), ``/drop`` (close without answering), ``/truncate`` (promise 100
bytes, send 10, close), ``/ws...`` (WebSocket echo after a correct 101; ``/ws-hello`` greets
first), ``/wsfake/426`` and ``/wsfake/200`` (refuse an upgrade with a normal answer), ``/wsbad``
(101 with a wrong ``Sec-WebSocket-Accept``). With ``answer=`` every request gets what that
function returns instead (:func:`fixed`, :func:`account_text`, or the test's own).

It does not check that requests are well formed beyond finding their end: a test that sends a
smuggling attempt through the gateway sees here exactly what the gateway let through.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from tests.harness.wire import Reader, parse_head, pattern, read_body, read_ws_frame, ws_accept, ws_frame

BODY_KEPT = 1 << 20  # bodies up to 1 MiB are kept in Received.body; larger ones only hashed


@dataclass
class Received:
    """One request as the upstream saw it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body_len: int
    body_sha256: str
    conn_id: int
    body: bytes | None = None  # None when longer than BODY_KEPT

    @property
    def path(self) -> str:
        """The request target as sent (path and query)."""
        return self.target

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def as_json(self) -> dict[str, Any]:
        """The record as the default answer carries it (the body as latin-1 text)."""
        return {"method": self.method, "target": self.target, "path": self.target, "version": self.version,
                "headers": [[k, v] for k, v in self.headers], "body_len": self.body_len,
                "body_sha256": self.body_sha256, "conn_id": self.conn_id,
                "body": None if self.body is None else self.body.decode("latin-1")}

    def __getitem__(self, key: str) -> Any:
        """``rec["path"]``, ``rec["headers"]`` (a list of (name, value)), ``rec["body"]``: the
        record read as the mapping its JSON answer carries."""
        if key == "headers":
            return list(self.headers)
        return self.as_json()[key]


class RecordingUpstream:
    """Threaded HTTP/1.1 and WebSocket upstream on 127.0.0.1 (see the module docstring)."""

    def __init__(self, tls: tuple[str, str] | None = None, client_ca: str | None = None, *,
                 answer: Responder | None = None, delay: float = 0.0) -> None:
        """``tls`` = (certificate chain PEM, key PEM) serves https; ``client_ca`` then requires a
        client certificate from that CA (recorded per connection in ``peer_cns``). ``answer``
        replaces the default answers; ``delay`` seconds are waited (on the connection's thread)
        before every answer, to hold a request in flight."""
        self.answer = answer
        self.delay = delay
        self._ctx: ssl.SSLContext | None = None
        if tls is not None:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(*tls)
            if client_ca:
                self._ctx.load_verify_locations(client_ca)
                self._ctx.verify_mode = ssl.CERT_REQUIRED
        self.peer_cns: list[str] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.requests: list[Received] = []
        self.connections = 0
        self.closed_connections = 0
        self.ws_messages: list[bytes] = []
        self.ws_close_codes: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def __enter__(self) -> "RecordingUpstream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and close every connection (threads end on their next read)."""
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass

    def paths(self) -> list[str]:
        """The target of every request so far, in arrival order."""
        return [r.target for r in self.requests]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                cid = self.connections
                self._conns.append(c)
            threading.Thread(target=self._serve, args=(c, cid), daemon=True).start()

    def _serve(self, c: socket.socket, cid: int) -> None:
        try:
            if self._ctx is not None:
                c.settimeout(10)
                c = self._ctx.wrap_socket(c, server_side=True)
                c.settimeout(None)
                peer = c.getpeercert()
                if peer:
                    subject: Any = peer["subject"]  # typeshed types getpeercert() loosely
                    cn = [str(v) for rdn in subject for (k, v) in rdn if k == "commonName"]
                    with self._lock:
                        self.peer_cns.append(cn[0] if cn else "")
        except (OSError, ssl.SSLError):
            with self._lock:
                self.closed_connections += 1
            return
        rd = Reader(c)
        try:
            while not self._stop.is_set():
                raw = rd.until(b"\r\n\r\n")
                if raw is None:
                    return
                line, headers = parse_head(raw)
                method, target, version = line.decode("latin-1").split(" ")
                got = _Body()
                n = read_body(rd, headers, got)
                rec = Received(method, target, version,
                               [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers], n,
                               got.sha256.hexdigest(), cid, got.kept())
                with self._lock:
                    self.requests.append(rec)
                if not self._answer(c, rd, rec):
                    return
        except (OSError, EOFError, ValueError):
            return
        finally:
            with self._lock:
                self.closed_connections += 1
            try:
                c.close()
            except OSError:
                pass

    def _send(self, c: socket.socket, status: str, headers: list[tuple[str, str]], body: bytes = b"",
              head_only: bool = False) -> None:
        out = [f"HTTP/1.1 {status}\r\n".encode()]
        out += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers]
        out.append(b"\r\n")
        if not head_only:
            out.append(body)
        c.sendall(b"".join(out))

    def _answer(self, c: socket.socket, rd: Reader, rec: Received) -> bool:
        """Answer one request; False ends the connection."""
        if self.delay:
            threading.Event().wait(self.delay)
        wants_close = any(v.lower() == "close" for v in rec.header_values("connection"))
        if self.answer is not None:
            a = self.answer(rec)
            self._send(c, f"{a.status} {a.reason}", [*a.headers, ("Content-Length", str(len(a.body)))], a.body,
                       rec.method == "HEAD")
            return not wants_close
        parts = urlsplit(rec.target)
        path, q = parts.path, parse_qs(parts.query)
        head_only = rec.method == "HEAD"
        upgrade = any(v.lower() == "websocket" for v in rec.header_values("upgrade"))
        if path.startswith("/slow/"):
            threading.Event().wait(float(path.split("/")[2]))
        if path == "/drop":
            return False
        if path == "/truncate":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            return False
        if path.startswith("/wsfake/"):
            refused = path.split("/")[2]
            body = b"no upgrade here\n"
            self._send(c, f"{refused} Refused", [("Content-Length", str(len(body)))], body)
            return True
        if path.startswith("/wsbad"):
            self._send(c, "101 Switching Protocols", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                                      ("Sec-WebSocket-Accept", "d3JvbmcgYWNjZXB0IHZhbHVlIQ==")])
            return self._ws_echo(c, rd, greet=False)
        if path.startswith("/ws") and upgrade:
            key = (rec.header_values("sec-websocket-key") or [""])[0].encode()
            hs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                  ("Sec-WebSocket-Accept", ws_accept(key).decode())]
            proto = rec.header_values("sec-websocket-protocol")
            if proto:
                hs.append(("Sec-WebSocket-Protocol", proto[0].split(",")[0].strip()))
            self._send(c, "101 Switching Protocols", hs)
            return self._ws_echo(c, rd, greet=path.startswith("/ws-hello"))
        if path.startswith("/bytes/"):
            n = int(path.split("/")[2])
            if "chunked" in q:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
                if not head_only:
                    for b in pattern(n):
                        c.sendall(b"%x\r\n" % len(b) + b + b"\r\n")
                    c.sendall(b"0\r\n\r\n")
                return True
            if "close" in q:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
                if not head_only:
                    for b in pattern(n):
                        c.sendall(b)
                return False
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % n)
            if not head_only:
                for b in pattern(n):
                    c.sendall(b)
            return True
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            body = b"" if code in (204, 304) else f"status {code}\n".encode()
            hs = [] if code in (204, 304) else [("Content-Length", str(len(body)))]
            self._send(c, f"{code} Status", hs, body, head_only)
            return True
        if path == "/headers":
            body = b"headers\n"
            self._send(c, "200 OK", [("Set-Cookie", "a=1; Path=/"), ("X-Multi", "one"), ("Set-Cookie", "b=2; Path=/"),
                                     ("X-Multi", "two"), ("Connection", "X-Secret"), ("X-Secret", "leak"),
                                     ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                                     ("Content-Length", str(len(body)))], body, head_only)
            return True
        body = json.dumps(rec.as_json()).encode()
        self._send(c, "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                   body, head_only)
        return not wants_close

    def _ws_echo(self, c: socket.socket, rd: Reader, greet: bool) -> bool:
        if greet:
            c.sendall(ws_frame(1, b"hello from upstream", mask=False))
        while True:
            fr = read_ws_frame(rd)
            if fr is None:
                return False
            op, payload = fr
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                with self._lock:
                    self.ws_close_codes.append(code)
                try:
                    c.sendall(ws_frame(8, payload[:2], mask=False))
                except OSError:
                    pass
                return False
            if op == 9:
                c.sendall(ws_frame(10, payload, mask=False))
                continue
            with self._lock:
                self.ws_messages.append(payload)
            c.sendall(ws_frame(op, payload, mask=False))

class _Body:
    """A body sink: hashes everything, keeps the bytes while they fit in :data:`BODY_KEPT`."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.parts: list[bytes] = []
        self.size = 0

    def __call__(self, part: bytes) -> None:
        self.sha256.update(part)
        self.size += len(part)
        if self.size <= BODY_KEPT:
            self.parts.append(part)

    def kept(self) -> bytes | None:
        return b"".join(self.parts) if self.size <= BODY_KEPT else None


@dataclass
class Answer:
    """What the upstream sends for one request (Content-Length is added)."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str = "OK"


Responder = Callable[[Received], Answer]


def fixed(body: bytes, content_type: str = "text/plain") -> Responder:
    """Answer every request 200 with ``body``."""
    return lambda rec: Answer(200, body, [("Content-Type", content_type)])


def account_text(rec: Received) -> Answer:
    """200 ``user=ACCOUNT`` (the ``X-Remote-User`` the gateway sent, ``-`` when none) and a newline."""
    user = (rec.header_values("x-remote-user") or ["-"])[0]
    return Answer(200, f"user={user}\n".encode(), [("Content-Type", "text/plain")])
