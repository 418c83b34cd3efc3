"""Helpers shared by the session tests: login, a WebSocket client, the CLI runner (on top of
the black-box helpers of ``tests.blackbox``)."""

from __future__ import annotations

import json as _json
import socket as _socket
import subprocess as _subprocess
import sys
import threading as _threading
import time as _time
from base64 import b64encode as _b64
from os import urandom as _urandom
from pathlib import Path

from tests.blackbox import Gateway, Pki, client_context, free_port, request, wait_for, write_config

__all__ = ["Gateway", "Pki", "client_context", "free_port", "request", "wait_for", "write_config"]


# --------------------------------------------------------------------------- session helpers


PASSWORD = "correct horse battery staple"


def session_config(tmp, pki, upstream_url, *, store, sessions=None, extra=None, name="gw"):
    """A gateway config in ``tmp/name`` with password login (file) and ``[sessions] store``.

    Writes the password file for ``alice`` and ``bob``.
    """
    folder = Path(tmp) / name
    folder.mkdir(parents=True, exist_ok=True)
    ex = {"listen": {"client_auth": "want", "max_connection_age": 60},
          "login": {"required_auth_methods": '[["tls-cert","password"]]', "password": "file",
                    "password_file": str(folder / "passwords")},
          "sessions": dict({"store": store}, **(sessions or {})),
          "audit": {"file": str(folder / "audit.jsonl")}}
    for sec, kv in (extra or {}).items():
        ex.setdefault(sec, {}).update(kv)
    cfg = write_config(folder, pki, upstream=upstream_url, extra=ex)
    from proxy.login.passwords import set_password  # what `certgate passwd` does

    for account in ("alice", "bob"):
        set_password(folder / "passwords", account, PASSWORD)
    return cfg


def login(port, pki, account="alice"):
    """Log in through ``POST /.certgate/api/auth``; returns the ``Cookie`` header value."""
    status, headers, body = request(port, "POST", "/.certgate/api/auth", cert=pki.client(account), ca=pki.ca_pem,
                                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                                    body=_json.dumps({"account": account, "password": PASSWORD}).encode())
    assert status == 200, (status, body)
    cookies = headers.get_all("Set-Cookie") or []
    assert len(cookies) == 1 and cookies[0].startswith("__Host-certgate="), cookies
    return cookies[0].split(";", 1)[0]


def get(port, pki, cookie, path="/", account="alice", cert=True):
    """GET ``path`` on a new connection (with ``account``'s certificate unless ``cert`` is False)."""
    return request(port, "GET", path, cert=pki.client(account) if cert else None, ca=pki.ca_pem,
                   headers={"Cookie": cookie, "Accept": "application/json"})


class WsClient:
    """A WebSocket through the gateway on one TLS connection presenting ``account``'s certificate."""

    def __init__(self, port, pki, cookie, path="/ws", account="alice"):
        from tests.support_http import _Reader

        ctx = client_context(pki.client(account), pki.ca_pem)
        raw = _socket.create_connection(("127.0.0.1", port), 10)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.rd = _Reader(self.sock)
        key = _b64(_urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Origin: https://localhost:{port}\r\nCookie: {cookie}\r\n\r\n").encode())
        head = self.rd.until(b"\r\n\r\n")
        assert head is not None and head.startswith(b"HTTP/1.1 101"), head

    def echo(self, text: bytes) -> bytes:
        from tests.support_http import ws_frame

        self.sock.sendall(ws_frame(1, text))
        fr = self.next_frame(10)
        assert fr is not None and fr[0] == 1, fr
        return fr[1]

    def next_frame(self, timeout: float):
        from tests.support_http import read_ws_frame

        self.sock.settimeout(timeout)
        try:
            return read_ws_frame(self.rd)
        except (_socket.timeout, TimeoutError):
            return "timeout"
        except OSError:
            return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def close_code(frame) -> int | None:
    """The close code of a close frame (None if ``frame`` is not one)."""
    if not frame or frame == "timeout" or frame[0] != 8 or len(frame[1]) < 2:
        return None
    return int.from_bytes(frame[1][:2], "big")


def certgate_cli(*args, timeout=60):
    """Run the real ``certgate`` console script; returns the CompletedProcess."""
    return _subprocess.run([str(Path(sys.executable).parent / "certgate"), *map(str, args)], text=True,
                           capture_output=True, timeout=timeout)


def pause(seconds: float) -> None:
    """Wait ``seconds`` (black-box tests that must let real time pass)."""
    _threading.Event().wait(seconds)


monotonic = _time.monotonic
