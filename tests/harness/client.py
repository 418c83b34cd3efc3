"""Test clients: one HTTPS request, a raw-bytes HTTP/1.1 client, TLS handshakes, a WebSocket.

- :func:`request`: one request on a new TLS connection with :mod:`http.client`;
  :func:`https_connection` and :func:`send` for several on one connection.
- :class:`Client`: a blocking client that sends exactly the bytes a test gives it and parses
  the replies (TLS with a client certificate by default, or plain).
- :func:`client_context`, :func:`tls_handshake`, :func:`handshake_refused`: TLS as a client.
- :class:`WsClient`, :func:`close_code`: a WebSocket through the gateway with a session cookie.

Every socket has a timeout; nothing here retries.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from tests.harness.pki import ClientCert, Pki
from tests.harness.wire import Reader, header_value, parse_head, read_body, read_ws_frame, ws_frame


@dataclass
class Reply:
    """One response as :class:`Client` read it (1xx skipped)."""

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
    """A blocking client speaking raw bytes to the gateway (TLS with a client cert by default).

    It sends exactly the bytes a test gives it (:meth:`send`) or a request it builds without
    normalising anything (:meth:`request`), so tests can send what a browser would not.
    """

    def __init__(self, port: int, pki: Pki | None = None, *, cert: str = "alice", plain: bool = False,
                 timeout: float = 15.0, ca_file: str | None = None, cert_files: tuple[str, str] | None = None,
                 alpn: list[str] | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if plain:
            self.sock: Any = raw
        else:
            if pki is not None:
                ca_file = pki.ca_pem
                if cert:
                    cc = pki.client(cert)
                    cert_files = (str(cc.cert_path), str(cc.key_path))
            ctx = ssl.create_default_context(cafile=ca_file)
            if cert_files:
                ctx.load_cert_chain(*cert_files)
            if alpn:
                ctx.set_alpn_protocols(alpn)
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.rd = Reader(self.sock)

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
        """Send ``data`` as it is."""
        self.sock.sendall(data)

    def request(self, method: str = "GET", target: str = "/", headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None, host: str = "gateway.test") -> Reply:
        """Send one request (Host first, Content-Length added for a body unless framed) and read
        its response."""
        hs = [("Host", host)] if host else []
        hs += headers or []
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
            hs.append(("Content-Length", str(len(body))))
        out = f"{method} {target} HTTP/1.1\r\n".encode() + b"".join(
            f"{k}: {v}\r\n".encode("latin-1") for k, v in hs) + b"\r\n" + (body or b"")
        self.send(out)
        return self.read_reply(head_only=method == "HEAD")

    def read_reply(self, head_only: bool = False, sink: Callable[[bytes], Any] | None = None) -> Reply:
        """Read one response (skipping 1xx); raises EOFError if the connection closes first."""
        while True:
            raw = self.rd.until(b"\r\n\r\n")
            if raw is None:
                raise EOFError(f"connection closed before a response head (got {bytes(self.rd.buf)[:200]!r})")
            line, headers = parse_head(raw)
            parts = line.decode("latin-1").split(" ", 2)
            status = int(parts[1])
            if 100 <= status < 200 and status != 101:
                continue
            break
        hdrs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        chunks: list[bytes] = []
        if head_only or status in (101, 204, 304):
            return Reply(status, parts[2] if len(parts) > 2 else "", hdrs, b"")
        framed = header_value(headers, b"content-length") is not None or header_value(headers, b"transfer-encoding") is not None
        if framed:
            read_body(self.rd, headers, sink or chunks.append)
        else:
            data = self.rd.rest()
            (sink or chunks.append)(data)
        return Reply(status, parts[2] if len(parts) > 2 else "", hdrs, b"".join(chunks))

    def read_ws(self) -> tuple[int, bytes] | None:
        """The next WebSocket frame (opcode, payload); None at EOF."""
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


def client_context(cert: ClientCert | None, ca: str | None, *, minimum: ssl.TLSVersion | None = None,
                   maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """An ``ssl`` client context trusting ``ca`` (file) and presenting ``cert`` if given."""
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def https_connection(port: int, cert: ClientCert | None = None, ca: str | None = None, *, host: str = "localhost",
                     timeout: float = 10.0, context: ssl.SSLContext | None = None) -> http.client.HTTPSConnection:
    """An HTTPS connection to 127.0.0.1:``port`` (not yet connected) presenting ``cert`` and
    verifying the server against ``ca`` for the name ``host``; :func:`send` requests on it."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context or client_context(cert, ca),
                                       timeout=timeout)
    conn._server_hostname = host  # type: ignore[attr-defined]  # SNI/verification name
    return conn


def send(conn: http.client.HTTPSConnection, method: str = "GET", path: str = "/", *,
         headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
         body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on ``conn`` (kept open); returns (status, headers, body).

    The Host header is the connection's server name with the port unless ``headers`` has one;
    nothing is added but Content-Length for a ``body``."""
    hs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    if not any(k.lower() == "host" for k, _ in hs):
        conn.putheader("Host", f"{conn._server_hostname}:{conn.port}")  # type: ignore[attr-defined]
    for k, v in hs:
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    return resp.status, resp.msg, resp.read()


def request(port: int, method: str = "GET", path: str = "/", *, cert: ClientCert | None = None,
            ca: str | None = None, headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
            body: bytes | None = None, host: str = "localhost", timeout: float = 10.0,
            context: ssl.SSLContext | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTPS request on a new connection (closed afterwards): :func:`https_connection` and
    :func:`send`."""
    conn = https_connection(port, cert, ca, host=host, timeout=timeout, context=context)
    try:
        return send(conn, method, path, headers=headers, body=body)
    finally:
        conn.close()


def tls_handshake(port: int, cert: ClientCert | None, ca: str | None, **kw: object) -> ssl.SSLSocket:
    """Open a TLS connection (handshake done) or raise ``ssl.SSLError``/``OSError``."""
    ctx = client_context(cert, ca, **kw)  # type: ignore[arg-type]
    raw = socket.create_connection(("127.0.0.1", port), 5)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        return s
    except BaseException:
        raw.close()
        raise


def handshake_refused(port: int, cert: ClientCert | None, ca: str | None) -> bool:
    """True when the gateway refuses the connection at (or right after) the TLS handshake.

    In TLS 1.3 the client learns of a refused certificate on its first read, so this
    sends a request and expects an alert or a closed connection instead of a response.
    """
    try:
        s = tls_handshake(port, cert, ca)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = s.recv(1024)
        return data == b""
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    finally:
        s.close()


class WsClient:
    """A WebSocket through the gateway on one TLS connection presenting ``account``'s certificate."""

    def __init__(self, port: int, pki: Pki, cookie: str, path: str = "/ws", account: str = "alice") -> None:
        ctx = client_context(pki.client(account), pki.ca_pem)
        raw = socket.create_connection(("127.0.0.1", port), 10)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.rd = Reader(self.sock)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Origin: https://localhost:{port}\r\nCookie: {cookie}\r\n\r\n").encode())
        head = self.rd.until(b"\r\n\r\n")
        assert head is not None and head.startswith(b"HTTP/1.1 101"), head

    def echo(self, text: bytes) -> bytes:
        """Send a text frame and return the payload of the text frame that comes back."""
        self.sock.sendall(ws_frame(1, text))
        fr = self.next_frame(10)
        assert isinstance(fr, tuple) and fr[0] == 1, fr
        return fr[1]

    def next_frame(self, timeout: float) -> tuple[int, bytes] | str | None:
        """The next frame; ``"timeout"`` when none came within ``timeout`` s; None when closed."""
        self.sock.settimeout(timeout)
        try:
            return read_ws_frame(self.rd)
        except (socket.timeout, TimeoutError):
            return "timeout"
        except OSError:
            return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def close_code(frame: tuple[int, bytes] | str | None) -> int | None:
    """The close code of a close frame (None if ``frame`` is not one)."""
    if not frame or isinstance(frame, str) or frame[0] != 8 or len(frame[1]) < 2:
        return None
    return int.from_bytes(frame[1][:2], "big")
