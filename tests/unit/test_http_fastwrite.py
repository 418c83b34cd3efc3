"""proxy.http.fastwrite: direct sends only when nothing is queued; the rest goes through Twisted."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.testing import StringTransport

from proxy.http.fastwrite import direct_writer, install


class _Reactor:
    def __init__(self) -> None:
        self.writers: list[Any] = []

    def addWriter(self, w: Any) -> None:
        self.writers.append(w)


def _server(sock: socket.socket) -> Any:
    t = object.__new__(tcp.Server)  # a real tcp.Server type without a reactor behind it
    t.socket = sock
    t.connected = True
    t.disconnecting = False
    t._writeDisconnected = False
    t._tempDataBuffer = []
    t._tempDataLen = 0
    t.dataBuffer = b""
    t.offset = 0
    t.producer = None
    t.reactor = _Reactor()
    return t


def test_direct_send_when_idle_and_queue_otherwise() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    t = _server(a)
    write = direct_writer(t)
    write(b"hello")
    assert b.recv(100) == b"hello" and t.reactor.writers == []  # no epoll registration
    t._tempDataBuffer.append(b"queued")
    write(b"later")
    assert t._tempDataBuffer == [b"queued", b"later"] and t.reactor.writers == [t]
    a.close()
    b.close()


def test_partial_send_queues_the_rest_in_order() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    t = _server(a)
    data = bytes(range(256)) * 8192  # 2 MiB: more than the socket takes at once
    direct_writer(t)(data)
    sent = b""
    while True:
        try:
            chunk = b.recv(1 << 20)
        except BlockingIOError:
            break
        sent += chunk
    queued = b"".join(t._tempDataBuffer)
    assert 0 < len(sent) < len(data) and sent + queued == data
    a.close()
    b.close()


def test_other_transports_untouched() -> None:
    st = StringTransport()
    assert direct_writer(st) == st.write
    install(st)
    assert "write" not in vars(st)
