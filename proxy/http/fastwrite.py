"""Writes that skip an epoll round trip when a plain TCP transport has nothing queued.

Twisted's ``FileDescriptor.write`` always queues data and registers for writability, so every
small response costs two ``epoll_ctl`` calls and one more reactor iteration. When nothing is
queued, sending at once is equivalent (same order, same bytes) and cheaper. Anything the socket
does not take is queued through the normal ``write``, so flow control and error handling stay
Twisted's. Only exact ``tcp.Server``/``tcp.Client`` transports are touched.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp

_PLAIN = (tcp.Server, tcp.Client)


def direct_writer(transport: Any) -> Callable[[bytes], None]:
    """A ``write(data)`` for ``transport`` that sends directly when its buffer is empty.

    Returns ``transport.write`` unchanged for anything that is not a plain TCP transport.
    """
    if type(transport) not in _PLAIN:
        return transport.write
    queued_write = type(transport).write.__get__(transport)
    sock = transport.socket

    def write(data: bytes) -> None:
        t = transport
        if (t._tempDataBuffer or t.offset != len(t.dataBuffer) or not t.connected or t.disconnecting
                or t._writeDisconnected or not data):
            queued_write(data)
            return
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            queued_write(data)  # let Twisted's doWrite report the failure
            return
        if n < len(data):
            queued_write(data[n:])

    return write


def install(transport: Any) -> None:
    """Make ``transport.write`` the direct writer (plain TCP transports only)."""
    if type(transport) in _PLAIN:
        transport.write = direct_writer(transport)
