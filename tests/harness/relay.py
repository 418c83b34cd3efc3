"""A TCP relay on a free loopback port that records every byte a client sends to an upstream.

Put it between certgate and a real upstream (cockpit-ws) to assert what reached the upstream::

    with RecordingRelay("127.0.0.1", ws.port) as relay:
        relay.url                 # point certgate's [upstream] url here
        relay.request_lines()     # [(b"GET", b"/cockpit/login"), ...] in arrival order

Threads with blocking sockets; every socket has a timeout, and the relay closes all at exit.
"""

from __future__ import annotations

import re
import socket
import threading

_REQUEST_LINE = re.compile(rb"(?m)^([A-Z]+) (\S+) HTTP/1\.[01]\r$")


class RecordingRelay:
    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.upstream = (host, port)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._received: list[bytearray] = []  # one buffer per accepted connection
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request_lines(self) -> list[tuple[bytes, bytes]]:
        """(method, target) of every request line the upstream received so far."""
        with self._lock:
            bufs = [bytes(b) for b in self._received]
        return [m for buf in bufs for m in _REQUEST_LINE.findall(buf)]

    def __enter__(self) -> "RecordingRelay":
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        self._listener = ls
        self.port = ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            socks, self._sockets = self._sockets, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=self.timeout)
            except OSError:
                client.close()
                continue
            client.settimeout(self.timeout)
            buf = bytearray()
            with self._lock:
                self._received.append(buf)
                self._sockets += [client, up]
            threading.Thread(target=self._pump, args=(client, up, buf), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record is not None:
                    with self._lock:
                        record += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
