"""Black-box helpers: a test PKI, config files, and the real gateway process.

Usage::

    pki = Pki(tmp_path)                       # CA, server cert, clients alice/bob, a rogue CA's client
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:%d" % port, extra={"listen": {"client_auth": "want"}})
    with Gateway(cfg) as gw:                  # `certgate run --config cfg` on a free loopback port
        status, headers, body = request(gw.port, "GET", "/", cert=pki.client("alice"), ca=pki.ca_pem)

Waiting is by polling a condition with a deadline (:func:`wait_for`), never a fixed sleep.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from trust import issue as I

VENV_BIN = Path(sys.executable).parent
CERTGATE = str(VENV_BIN / "certgate")


class Recorder:
    """An HTTP/1.1 upstream on loopback that records every request and answers it with JSON.

    ``delay`` seconds are waited (on the server thread) before answering, to hold a
    request in flight.
    """

    def __init__(self, delay: float = 0.0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import json

        self.requests: list[dict[str, object]] = []
        self.delay = delay
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                item = {"method": self.command, "path": self.path, "headers": list(self.headers.items()),
                        "body": body.decode("latin-1")}
                rec.requests.append(item)
                if rec.delay:
                    threading.Event().wait(rec.delay)
                out = json.dumps(item).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> object:
    """Poll ``cond`` until it returns a true value; raise AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    ev = threading.Event()
    last_exc: BaseException | None = None
    while True:
        try:
            val = cond()
            if val:
                return val
        except Exception as e:  # conditions may raise while the system settles
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        ev.wait(interval)


@dataclass
class ClientCert:
    cn: str
    cert_path: Path
    key_path: Path
    fingerprint: str


class Pki:
    """A throwaway PKI in ``folder``: CA + server cert + named clients, and a rogue CA."""

    def __init__(self, folder: Path, key_type: str = "ec256", clients: Iterable[str] = ("alice", "bob")) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key_type = key_type
        self.ca = I.ca("certgate test CA", key_type=key_type)  # type: ignore[arg-type]
        self.ca_path = self.folder / "ca.pem"
        self.ca_path.write_bytes(self.ca.cert_pem())
        self.ca_pem = str(self.ca_path)
        self.server = I.server(self.ca, ("localhost", "127.0.0.1"), key_type=key_type)  # type: ignore[arg-type]
        self.server_cert, self.server_key = self.server.write(self.folder, "server")
        self.store = self.folder / "trust.d"
        self.store.mkdir(exist_ok=True)
        (self.store / "test-ca.pem").write_bytes(self.ca.cert_pem())
        self.rogue_ca = I.ca("certgate test CA", key_type=key_type)  # same name, other key
        self._clients: dict[str, ClientCert] = {}
        for cn in clients:
            self.client(cn)

    def client(self, cn: str, issuer: I.Issued | None = None, name: str | None = None, **kw: object) -> ClientCert:
        """A client certificate for ``cn`` (cached by ``name`` or ``cn``); ``issuer`` defaults to the CA."""
        key = name or cn
        if key in self._clients and issuer is None and not kw:
            return self._clients[key]
        c = I.client(issuer or self.ca, cn, key_type=self.key_type, **kw)  # type: ignore[arg-type]
        cert_path, key_path = c.write(self.folder / "clients", key)
        cc = ClientCert(cn, cert_path, key_path, c.fingerprint)
        self._clients[key] = cc
        return cc

    def rogue_client(self, cn: str = "alice") -> ClientCert:
        """A client certificate for ``cn`` from a CA with the trusted CA's name but another key."""
        return self.client(cn, issuer=self.rogue_ca, name=f"rogue-{cn}")


def write_config(folder: Path, pki: Pki, *, upstream: str, port: int | None = None,
                 extra: Mapping[str, Mapping[str, object]] | None = None, raw: str = "") -> Path:
    """Write ``folder/certgate.conf`` for ``pki`` forwarding to ``upstream``; returns its path.

    ``extra`` adds or overrides keys per section (``{"listen": {"client_auth": "want"}}``);
    ``raw`` is appended verbatim (e.g. ``[route:x]`` sections).
    """
    sections: dict[str, dict[str, object]] = {
        "listen": {"address": "127.0.0.1", "port": port or free_port(), "certificate": str(pki.server_cert),
                   "key": str(pki.server_key), "client_auth": "need", "handshake_timeout": 5},
        "trust": {"store": str(pki.store), "reload_interval": 0.5},
        "upstream": {"url": upstream, "connect_timeout": 2, "read_timeout": 10},
        "sessions": {"store": "memory"},
        "log": {"level": "info"},
    }
    for sec, kv in (extra or {}).items():
        sections.setdefault(sec, {}).update(kv)
    lines: list[str] = []
    for sec, kv in sections.items():
        lines.append(f"[{sec}]")
        lines += [f"{k} = {v}" for k, v in kv.items()]
        lines.append("")
    path = Path(folder) / "certgate.conf"
    path.write_text("\n".join(lines) + raw)
    return path


def config_port(path: Path) -> int:
    import configparser

    cp = configparser.ConfigParser(interpolation=None)
    cp.read(path)
    return cp.getint("listen", "port")


class Gateway:
    """``certgate run --config PATH`` as a real process; waits until it accepts connections."""

    def __init__(self, config: Path, *, env: Mapping[str, str] | None = None, start_timeout: float = 20.0,
                 args: Iterable[str] = (), exe: str | None = None) -> None:
        self.config = Path(config)
        self.exe = exe or CERTGATE
        self.port = config_port(self.config)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.start_timeout = start_timeout
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.config.parent / f"gateway-{self.port}.log"

    def start(self) -> "Gateway":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.exe, "run", "--config", str(self.config), *self.args],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, start_new_session=True)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"certgate exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                return False

        try:
            wait_for(up, self.start_timeout, what=f"certgate to listen on {self.port}")
        except RuntimeError:
            raise
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}\n--- gateway log ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL the process group; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


def request(port: int, method: str = "GET", path: str = "/", *, cert: ClientCert | None = None,
            ca: str | None = None, headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
            body: bytes | None = None, host: str = "localhost", timeout: float = 10.0,
            context: ssl.SSLContext | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTPS request on a new connection; returns (status, headers, body)."""
    ctx = context or client_context(cert, ca)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    conn._server_hostname = host  # type: ignore[attr-defined]  # SNI/verification name
    try:
        hs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if not any(k.lower() == "host" for k, _ in hs):
            conn.putheader("Host", f"{host}:{port}")
        for k, v in hs:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.msg, resp.read()
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
