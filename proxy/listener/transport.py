"""A TLS server transport that runs pyOpenSSL on the accepted socket itself (no memory BIO).

Twisted's ``TLSMemoryBIOProtocol`` wraps every connection in a second protocol object and
moves every TLS record through two memory BIOs in Python (about 350 µs of Python per mTLS
handshake, bench/README.md). Here OpenSSL reads and writes the non-blocking socket
directly, and one ``FileDescriptor`` per connection is both the TCP and the TLS transport:

* :class:`TLSPort` is a ``tcp.Port`` (Twisted's accept loop, ``SO_REUSEPORT`` bindings)
  whose connections are :class:`TLSServer`; each one gets an ``SSL.Connection`` from the
  listener's ``creator.socket_connection(sock)`` (the current trust generation's context).
* The handshake is driven by readiness; then ``handshakeCompleted()`` is called on the
  protocol (``IHandshakeListener``), exactly as with Twisted's TLS.
* ``getHandle()`` is the ``SSL.Connection`` (what :func:`proxy.listener.tls.identify` reads).
* Producer/consumer: ``pauseProducing`` stops reading; ``resumeProducing`` also delivers
  bytes OpenSSL already decrypted (no epoll event would come for them).
* A refused handshake (the alert is already on the socket) ends in a bounded lingering
  close: the write side is shut, reads are discarded until the client closes, at most
  ``LINGER_SECONDS`` / ``LINGER_BYTES``, so the client reads the alert instead of a reset.
  The lingering deadlines of all connections share the port's one
  :class:`~proxy.timerwheel.TimerWheel` (no ``DelayedCall`` per connection).
* ``loseConnection`` sends close_notify after the queued bytes; ``abortConnection`` resets.

It does not verify anything itself: the context's verify callback decides (proxy.listener.verify).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, Any, cast

from OpenSSL import SSL
from twisted.internet import abstract, main, tcp
from twisted.internet.interfaces import IHandshakeListener
from twisted.python.failure import Failure

from proxy.timerwheel import TimerWheel

if TYPE_CHECKING:  # pragma: no cover
    from proxy.clock import Clock

#: how long (and how many discarded bytes) a refused connection lingers for its alert
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
#: TLS records handled per readiness event before yielding to other connections
_RECORDS_PER_EVENT = 16
#: a record with less plaintext than this is interactive (a WebSocket message, a request):
#: reading stops after it instead of asking the socket for more and meeting EAGAIN
_SMALL_RECORD = 2048


class TLSServer(tcp.Server):
    """One accepted TLS connection; see the module docstring for what it guarantees."""

    logstr = "certgate-tls"
    repstr = "<TLSServer>"
    bufferSize = 65536  # one recv() returns at most one TLS record (16 KiB of plaintext)

    # Every attribute a connection sets lives in a slot, initialised below to the Twisted class
    # default it shadows: the instance dict (which Twisted's bases bring) keeps only the three
    # tcp.Connection deletes at close (socket, fileno, protocol) and stays a small shared-key dict.
    __slots__ = ("_clock", "_port", "_tlsConnection", "_handshook", "_paused", "_linger", "_linger_reason",
                 "_lingered", "reactor", "_tempDataBuffer", "_tempDataLen", "client", "server", "sessionno",
                 "hostname", "_addressType", "connected", "disconnected", "disconnecting", "_writeDisconnecting",
                 "_writeDisconnected", "dataBuffer", "offset", "producer", "streamingProducer", "producerPaused",
                 "_aborting")

    def __init__(self, sock: socket.socket, protocol: Any, client: tuple[Any, ...], server: tcp.Port,
                 sessionno: int, reactor: Any) -> None:
        # tcp.Server.__init__ without its per-connection log prefix and repr strings.
        if not isinstance(server, TLSPort):  # tcp.Port's signature; only a TLSPort makes these
            raise TypeError(f"TLSServer needs a TLSPort, not {type(server).__name__}")
        abstract.FileDescriptor.__init__(self, reactor=reactor)
        self._clock: Clock = reactor  # its time (self.reactor is typed IReactorFDSet, which has none)
        self._port = server
        sock.setblocking(False)
        self.socket = sock
        self.fileno = sock.fileno
        self.protocol = protocol
        self.connected = self.disconnected = self.disconnecting = 0
        self._writeDisconnecting = self._writeDisconnected = self._aborting = False
        self.dataBuffer = b""
        self.offset = 0
        self.producer = None
        self.streamingProducer = self.producerPaused = False
        self._addressType = tcp.address.IPv6Address if len(client) != 2 else tcp.address.IPv4Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        conn = server.creator.socket_connection(sock)
        conn.set_app_data(self)
        conn.set_accept_state()
        self._tlsConnection: SSL.Connection | None = conn
        self._handshook = False
        self._paused = False
        self._linger: int | None = None  # the port wheel's bucket while a refused connection lingers
        self._linger_reason: Failure | None = None
        self._lingered = 0
        self.startReading()
        self.connected = 1

    # ------------------------------------------------------------------ ITransport
    def getHandle(self) -> Any:
        """The ``SSL.Connection`` (not the socket), as with Twisted's TLS transport."""
        return self._tlsConnection

    def getHost(self) -> Any:
        """The local address; the listening one when the port is bound to one address (no
        ``getsockname`` per connection), else the socket's own."""
        host = self._port.fixed_host
        return host if host is not None else tcp.Server.getHost(self)

    def setTcpNoDelay(self, enabled: bool) -> None:
        if enabled and self._port.nodelay:
            return  # inherited from the listening socket at accept (Linux)
        tcp.Server.setTcpNoDelay(self, enabled)

    def write(self, data: bytes) -> None:
        """Send at once when nothing is queued (no epoll round trip); queue the rest."""
        if (self._handshook and not self._tempDataBuffer and self.offset == len(self.dataBuffer)
                and self.connected and not self.disconnecting and not self._writeDisconnected and data):
            try:
                n = self._tlsConnection.send(data)  # type: ignore[union-attr]
            except (SSL.WantWriteError, SSL.WantReadError):
                n = 0  # OpenSSL expects the same bytes again: they are queued whole
            except SSL.Error:
                n = 0  # doWrite meets the error again and reports the connection lost
            if n >= len(data):
                return
            data = data[n:]
        abstract.FileDescriptor.write(self, data)

    def writeSequence(self, iovec: Any) -> None:
        self.write(b"".join(iovec))

    def loseConnection(self) -> None:
        abstract.FileDescriptor.loseConnection(self)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        abstract.FileDescriptor.registerProducer(self, producer, streaming)

    def unregisterProducer(self) -> None:
        abstract.FileDescriptor.unregisterProducer(self)

    def pauseProducing(self) -> None:
        self._paused = True
        abstract.FileDescriptor.pauseProducing(self)

    def resumeProducing(self) -> None:
        self._paused = False
        abstract.FileDescriptor.resumeProducing(self)
        conn = self._tlsConnection
        if self._handshook and conn is not None and self.connected and conn.pending():
            # Plaintext already inside OpenSSL: epoll will not report it. Deliver it soon
            # (not now: the protocol may be resuming from inside its own callback).
            self._clock.callLater(0, self._drain)

    def _drain(self) -> None:
        if self.connected and not self.disconnecting and not self._paused:
            why = self._read_records()
            if why is not None:
                self.reactor.removeReader(self)
                self.reactor.removeWriter(self)
                self.connectionLost(Failure(why))

    # ------------------------------------------------------------------ reactor events
    def doRead(self) -> Any:
        if self._handshook:
            return self._read_records()
        if self._linger is not None:
            return self._linger_read()
        return self._handshake()

    def doWrite(self) -> Any:
        if self._handshook:
            return abstract.FileDescriptor.doWrite(self)
        self.stopWriting()
        if self._linger is not None:
            return None
        if self.disconnecting:
            return main.CONNECTION_DONE  # loseConnection() before the handshake ended: close now
        return self._handshake()

    def writeSomeData(self, data: Any) -> Any:
        if not len(data):
            return 0  # SSL_write of nothing is an error, not a no-op
        try:
            return self._tlsConnection.send(data[:self.SEND_LIMIT])  # type: ignore[union-attr]
        except (SSL.WantWriteError, SSL.WantReadError):
            return 0
        except SSL.Error:
            return main.CONNECTION_LOST

    def _postLoseConnection(self) -> Any:
        conn = self._tlsConnection
        if self._handshook and conn is not None:
            try:
                conn.shutdown()  # close_notify; the peer's answer is not awaited
            except SSL.Error:
                pass
        return main.CONNECTION_DONE

    def connectionLost(self, reason: Failure) -> None:
        if self._linger is not None:
            self._port.wheel.discard(self, self._linger)
            self._linger = None
        tcp.Server.connectionLost(self, reason)
        self._tlsConnection = None if self._handshook else self._tlsConnection  # keep it for failure reports

    # ------------------------------------------------------------------ TLS
    def _handshake(self) -> Any:
        conn = self._tlsConnection
        try:
            conn.do_handshake()  # type: ignore[union-attr]
        except SSL.WantReadError:
            return None
        except SSL.WantWriteError:
            self.startWriting()
            return None
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return main.CONNECTION_DONE  # the client went away mid-handshake: no alert to deliver
        except SSL.Error as e:
            return self._refuse(e)
        self._handshook = True
        if self._tempDataBuffer or self.offset != len(self.dataBuffer):
            self.startWriting()  # bytes written before the handshake ended
        listener = IHandshakeListener(self.protocol, None)
        if listener is not None:
            listener.handshakeCompleted()
        if self.connected and not self.disconnecting and not self._paused:
            return self._read_records()  # application data may have come with the Finished
        return None

    def _read_records(self) -> Any:
        """Deliver decrypted bytes, up to ``bufferSize`` per ``dataReceived`` (several records
        joined: a streamed upload costs one parser feed and one upstream write per 64 KiB,
        not per 16 KiB record); at most ``_RECORDS_PER_EVENT`` records per readiness event."""
        conn = self._tlsConnection
        size = self.bufferSize
        records = 0
        while records < _RECORDS_PER_EVENT:
            data, why, more = self._recv_some(conn, size)
            records += 4
            if data:
                self.protocol.dataReceived(data)
            if why is not None:
                return why
            if not more or not self.connected or self.disconnecting or self._paused or self._tlsConnection is None:
                return None
        if conn.pending():  # type: ignore[union-attr]
            self._clock.callLater(0, self._drain)
        return None

    @staticmethod
    def _recv_some(conn: Any, size: int) -> tuple[bytes, Any, bool]:
        """(plaintext of up to ``size`` bytes, why the connection ends or None, whether more may follow).

        Stops after a record shorter than ``_SMALL_RECORD`` that did not fill what was asked:
        OpenSSL then holds nothing more (the context never sets read-ahead, so the next record
        is still in the socket and the level-triggered poll reports it), and a WebSocket
        message or a request costs no failing ``SSL_read`` (EAGAIN and a WantReadError)."""
        first = b""
        rest: list[bytes] | None = None
        got = 0
        while got < size:
            want = size - got
            try:
                piece = conn.recv(want)
            except SSL.WantReadError:
                return (first if rest is None else b"".join(rest)), None, False
            except SSL.WantWriteError:
                return (first if rest is None else b"".join(rest)), None, False
            except SSL.ZeroReturnError:
                return (first if rest is None else b"".join(rest)), main.CONNECTION_DONE, False  # close_notify
            except SSL.SysCallError as e:
                why = main.CONNECTION_DONE if e.args and e.args[0] == -1 else main.CONNECTION_LOST
                return (first if rest is None else b"".join(rest)), why, False
            except SSL.Error as e:
                return (first if rest is None else b"".join(rest)), e, False
            n = len(piece)
            got += n
            if rest is not None:
                rest.append(piece)
            elif first:
                rest = [first, piece]
            else:
                first = piece
            if n < want and n < _SMALL_RECORD:
                # The record ended before the buffer did: nothing of it is left inside OpenSSL.
                return (first if rest is None else b"".join(rest)), None, False
        return (first if rest is None else b"".join(rest)), None, True

    def _refuse(self, error: SSL.Error) -> None:
        """The handshake failed; OpenSSL has written its alert. Linger so the client reads it."""
        self._linger_reason = Failure(error)
        self.stopWriting()
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._linger = self._port.wheel.add(self, self._clock.seconds() + LINGER_SECONDS)
        return None

    def expire(self, now: float) -> None:
        """The port wheel's call: the lingering time is over."""
        if self._linger is not None:
            self._linger = None
            self._linger_end()

    def _linger_read(self) -> Any:
        try:
            data = self.socket.recv(4096)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        self._lingered += len(data)
        if data and self._lingered <= LINGER_BYTES:
            return None
        self._linger_end()
        return None

    def _linger_end(self) -> None:
        reason = self._linger_reason or Failure(main.CONNECTION_DONE)
        if self._linger is not None:
            self._port.wheel.discard(self, self._linger)
        self._linger = None
        if self.connected:
            self.reactor.removeReader(self)
            self.reactor.removeWriter(self)
            self.connectionLost(reason)


class TLSPort(tcp.Port):
    """A ``tcp.Port`` whose connections are :class:`TLSServer` transports.

    ``creator.socket_connection(sock)`` must return a new server ``SSL.Connection`` on
    ``sock`` (see :meth:`proxy.listener.tls.LiveServerTLS.socket_connection`).
    """

    transport = TLSServer
    #: accepted sockets inherit TCP_NODELAY from the listening socket (set in createInternetSocket)
    nodelay = False
    #: the listening address when it is one address (not a wildcard): every connection's getHost()
    fixed_host: Any = None

    def __init__(self, port: Any, factory: Any, creator: Any, backlog: int = 50, interface: str = "",
                 reactor: Any = None) -> None:
        super().__init__(port, factory, backlog, interface, reactor)
        self.creator = creator
        #: the lingering deadlines of refused connections (the reactor's time; self.reactor is
        #: typed IReactorFDSet, which has none)
        self.wheel = TimerWheel(cast("Clock", self.reactor))

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        if sys.platform.startswith("linux"):
            try:
                skt.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.nodelay = True
            except OSError:
                self.nodelay = False
        return skt

    def startListening(self) -> None:
        super().startListening()
        host = self.getHost()
        if ipaddress.ip_address(host.host.split("%")[0]).is_unspecified:
            self.fixed_host = None
        else:
            self.fixed_host = host


def listen_tls(reactor: Any, binding: Any, factory: Any, creator: Any, backlog: int = 1024) -> TLSPort:
    """Listen on ``binding`` (``tcp.makeBinding``) with :class:`TLSServer` connections."""
    port = TLSPort(binding, factory, creator, backlog=backlog, reactor=reactor)
    port.startListening()
    return port
