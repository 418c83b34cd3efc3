"""Test upstreams and clients for the forwarding path (usable by every engineer's tests).

- :class:`EchoServer` — a real HTTP/1.1 + WebSocket upstream on loopback (threads, raw sockets).
  It records exactly what reached it (method, target, raw headers in order and case, body length
  and SHA-256) in ``requests`` and answers with that record as JSON. Paths with special answers:
  ``/bytes/N`` (N bytes of :func:`pattern`, ``?chunked=1`` or ``?close=1`` for other framings),
  ``/status/NNN``, ``/slow/SECONDS``, ``/headers`` (repeated and hop-by-hop response headers),
  ``/drop`` (close without answering), ``/truncate`` (promise 100 bytes, send 10, close),
  ``/ws...`` (WebSocket echo after a correct 101; ``/ws-hello`` greets first),
  ``/wsfake/426`` and ``/wsfake/200`` (refuse an upgrade with a normal answer),
  ``/wsbad`` (101 with a wrong ``Sec-WebSocket-Accept``).
- :func:`make_config` — a :class:`proxy.config.Config` with schema defaults and overrides,
  built without reading a file.
- :class:`Client` — a blocking TLS (or plain) client that sends raw bytes and parses replies.
- :class:`GatewayProcess` — runs ``tests/support_http_gateway.py`` (the real HTTP layer behind
  TLS with a fake gate) as a subprocess on a free port.

Waiting uses ``threading.Event().wait`` with deadlines, never ``time.sleep``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_BLOCK = bytes(range(256)) * 4096  # 1 MiB


def pattern(n: int) -> Iterator[bytes]:
    """The deterministic byte stream ``/bytes/N`` sends, in blocks of at most 1 MiB."""
    while n > 0:
        k = min(n, len(_BLOCK))
        yield _BLOCK[:k]
        n -= k


def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    for b in pattern(n):
        h.update(b)
    return h.hexdigest()


def wait_for(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond()`` until true; AssertionError naming ``what`` after ``timeout`` seconds."""
    ev = threading.Event()
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        ev.wait(0.02)


# --------------------------------------------------------------------------- raw HTTP reading

class _Reader:
    """Buffered reads from a blocking socket."""

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


def _parse_head(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = raw[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers.append((k, v.strip()))
    return lines[0], headers


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _read_body(rd: _Reader, headers: list[tuple[bytes, bytes]], sink: Any) -> int:
    """Read a request/response body by its framing into ``sink(bytes)``; return its length."""
    te = _get(headers, b"transfer-encoding")
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
            left = size
            while left:
                part = rd.some(min(left, 262144)) if rd.buf or True else b""
                if not part:
                    raise EOFError("eof in chunk")
                sink(part)
                left -= len(part)
                total += len(part)
            if rd.exactly(2) != b"\r\n":
                raise EOFError("bad chunk end")
    cl = _get(headers, b"content-length")
    if cl is not None:
        left = int(cl)
        while left:
            part = rd.some(min(left, 262144))
            if not part:
                raise EOFError("eof in body")
            sink(part)
            left -= len(part)
            total += len(part)
    return total


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


def read_ws_frame(rd: _Reader) -> tuple[int, bytes] | None:
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
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


# --------------------------------------------------------------------------- the upstream

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

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "target": self.target, "version": self.version,
                "headers": [[k, v] for k, v in self.headers], "body_len": self.body_len,
                "body_sha256": self.body_sha256, "conn_id": self.conn_id}


class EchoServer:
    """Threaded HTTP/1.1 and WebSocket echo upstream on 127.0.0.1 (see the module docstring)."""

    def __init__(self, tls: tuple[str, str] | None = None, client_ca: str | None = None) -> None:
        """``tls`` = (certificate chain PEM, key PEM) serves https; ``client_ca`` then requires a
        client certificate from that CA (recorded per request in ``peer_cns``)."""
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

    def __enter__(self) -> "EchoServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
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
                    cn = [v for rdn in peer["subject"] for k, v in rdn if k == "commonName"]
                    with self._lock:
                        self.peer_cns.append(cn[0] if cn else "")
        except (OSError, ssl.SSLError):
            with self._lock:
                self.closed_connections += 1
            return
        rd = _Reader(c)
        try:
            while not self._stop.is_set():
                raw = rd.until(b"\r\n\r\n")
                if raw is None:
                    return
                line, headers = _parse_head(raw)
                method, target, version = line.decode("latin-1").split(" ")
                h = hashlib.sha256()
                n = _read_body(rd, headers, h.update)
                rec = Received(method, target, version,
                               [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers], n,
                               h.hexdigest(), cid)
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

    def _answer(self, c: socket.socket, rd: _Reader, rec: Received) -> bool:
        """Answer one request; False ends the connection."""
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
            code = path.split("/")[2]
            body = b"no upgrade here\n"
            self._send(c, f"{code} Refused", [("Content-Length", str(len(body)))], body)
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
        return not any(v.lower() == "close" for v in rec.header_values("connection"))

    def _ws_echo(self, c: socket.socket, rd: _Reader, greet: bool) -> bool:
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


WebSocketEchoServer = EchoServer  # the same server answers WebSocket upgrades on /ws...


# --------------------------------------------------------------------------- config

def make_config(upstream_url: str, overrides: dict[str, dict[str, Any]] | None = None,
                routes: list[dict[str, Any]] | None = None, base_dir: Path | None = None) -> Any:
    """A Config with schema defaults, ``[upstream] url`` and per-section ``overrides``.

    ``routes`` adds ``[route:NAME]`` entries (dicts with ``name``, ``prefix``, ``url`` and any
    upstream key). Does not read or check files.
    """
    from proxy.config import ROUTE_KEYS, SCHEMA, build_config, default_values, route_from_values
    from proxy.sessions.presence_rules import derive_defaults
    from trust.settings import TrustSettings

    overrides = overrides or {}
    vals = {sec: default_values(sec) for sec in SCHEMA}
    vals["listen"].update(certificate=None, key=None)
    vals["upstream"]["url"] = upstream_url
    for sec, kv in overrides.items():
        vals[sec].update(kv)
    derive_defaults(vals)
    rts = []
    for r in routes or []:
        rv = {k: spec.default for k, spec in ROUTE_KEYS.items()}
        rv.update({k: v for k, v in r.items() if k != "name"})
        rts.append(route_from_values(r["name"], rv, r["prefix"]))
    rts.sort(key=lambda r: len(r.prefix), reverse=True)
    rts.append(route_from_values("default", vals["upstream"], "/"))
    base = base_dir or Path("/tmp")
    return build_config(vals, path=base / "certgate.conf", base_dir=base, trust=TrustSettings(store=base / "trust"),
                        routes=rts)


# --------------------------------------------------------------------------- PKI for tests

@dataclass
class ForwardPKI:
    """A CA, a server certificate for 127.0.0.1/localhost and a client ``alice``, on disk."""

    folder: Path
    ca: Any = None
    server: Any = None
    alice: Any = None
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, folder: Path) -> "ForwardPKI":
        from trust import issue

        p = cls(Path(folder))
        p.ca = issue.ca("forwarding test CA")
        p.server = issue.server(p.ca, ("localhost", "127.0.0.1"))
        p.alice = issue.client(p.ca, "alice")
        ca_pem = p.folder / "ca.pem"
        p.folder.mkdir(parents=True, exist_ok=True)
        ca_pem.write_bytes(p.ca.cert_pem())
        s_cert, s_key = p.server.write(p.folder, "server")
        a_cert, a_key = p.alice.write(p.folder, "alice")
        p.files = {"ca": str(ca_pem), "server_cert": str(s_cert), "server_key": str(s_key),
                   "alice_cert": str(a_cert), "alice_key": str(a_key)}
        return p


# --------------------------------------------------------------------------- client

@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """A blocking client speaking raw bytes to the gateway (TLS with a client cert by default)."""

    def __init__(self, port: int, pki: ForwardPKI | None = None, *, cert: str = "alice", plain: bool = False,
                 timeout: float = 15.0, ca_file: str | None = None, cert_files: tuple[str, str] | None = None,
                 alpn: list[str] | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if plain:
            self.sock: Any = raw
        else:
            if pki is not None:
                ca_file = pki.files["ca"]
                cert_files = (pki.files[f"{cert}_cert"], pki.files[f"{cert}_key"]) if cert else None
            ctx = ssl.create_default_context(cafile=ca_file)
            if cert_files:
                ctx.load_cert_chain(*cert_files)
            if alpn:
                ctx.set_alpn_protocols(alpn)
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.rd = _Reader(self.sock)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str = "GET", target: str = "/", headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None, host: str = "gateway.test") -> Reply:
        hs = [("Host", host)] if host else []
        hs += headers or []
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
            hs.append(("Content-Length", str(len(body))))
        out = f"{method} {target} HTTP/1.1\r\n".encode() + b"".join(
            f"{k}: {v}\r\n".encode("latin-1") for k, v in hs) + b"\r\n" + (body or b"")
        self.send(out)
        return self.read_reply(head_only=method == "HEAD")

    def read_reply(self, head_only: bool = False, sink: Any = None) -> Reply:
        """Read one response (skipping 1xx); raises EOFError if the connection closes first."""
        while True:
            raw = self.rd.until(b"\r\n\r\n")
            if raw is None:
                raise EOFError(f"connection closed before a response head (got {bytes(self.rd.buf)[:200]!r})")
            line, headers = _parse_head(raw)
            parts = line.decode("latin-1").split(" ", 2)
            status = int(parts[1])
            if 100 <= status < 200 and status != 101:
                continue
            break
        hdrs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        chunks: list[bytes] = []
        if head_only or status in (101, 204, 304):
            return Reply(status, parts[2] if len(parts) > 2 else "", hdrs, b"")
        framed = _get(headers, b"content-length") is not None or _get(headers, b"transfer-encoding") is not None
        if framed:
            _read_body(self.rd, headers, sink or chunks.append)
        else:
            data = self.rd.rest()
            (sink or chunks.append)(data)
        return Reply(status, parts[2] if len(parts) > 2 else "", hdrs, b"".join(chunks))

    def read_ws(self) -> tuple[int, bytes] | None:
        return read_ws_frame(self.rd)

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within ``timeout`` (nothing else arriving)."""
        self.sock.settimeout(timeout)
        try:
            self.rd.rest()
            return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:  # reset, TLS alert: closed as well
            return True


# --------------------------------------------------------------------------- gateway subprocess

class GatewayProcess:
    """``tests/support_http_gateway.py`` in a subprocess: the real HTTP layer, TLS, a fake gate."""

    def __init__(self, config: dict[str, Any], pki: ForwardPKI | None, *, plain: bool = False) -> None:
        spec = {"config": config, "pki": pki.files if pki else None, "plain": plain}
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, os.environ.get("GW_SCRIPT", str(ROOT / "tests" / "support_http_gateway.py")),
                                      json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=str(ROOT))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"gateway did not start: {err}")
        self.port = json.loads(line)["port"]
        self.pid = self.proc.pid
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def log(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def rss_kib(self, field_name: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field_name} not in /proc/{self.pid}/status")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "GatewayProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
