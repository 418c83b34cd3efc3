"""The socket-level TLS transport (proxy.listener.transport) on real loopback sockets.

A private epoll reactor (not the global one) runs in the test thread, driven by
``spin(condition)`` with a deadline; each client is a blocking stdlib ``ssl`` socket in a
thread. The server side is the real ``LiveServerTLS`` with a real trust state.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from OpenSSL import SSL
from twisted.internet import epollreactor, tcp
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from proxy.listener import transport as _tls_socket
from proxy.listener.reload import TrustState
from proxy.listener.tls import LiveServerTLS, identify
from tests.harness.config import listener_config
from tests.harness.pki import Pki


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """Records what the transport delivers; ``pause_first`` pauses reading at the first bytes."""

    pause_first = False

    def __init__(self) -> None:
        self.data = b""
        self.handle: Any = None
        self.identity: Any = None
        self.lost: Any = None
        self.paused = False

    def handshakeCompleted(self) -> None:
        self.handle = self.transport.getHandle()
        self.identity = identify(self.transport, time.time())

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.pause_first and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        if self.data.endswith(b"\n") and not self.pause_first:
            self.transport.write(b"echo:" + self.data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


class Server:
    def __init__(self, tmp_path: Path, client_auth: str = "need") -> None:
        self.reactor = epollreactor.EPollReactor()
        self.pki = Pki(tmp_path / "pki")
        cfg = listener_config(self.pki, client_auth=client_auth)
        self.protocols: list[Recorder] = []
        factory = Factory()
        factory.buildProtocol = self._build  # type: ignore[method-assign]
        binding = tcp.makeBinding("127.0.0.1", 0, reuseAddress=True)
        self.port = _tls_socket.listen_tls(self.reactor, binding, factory,
                                           LiveServerTLS(TrustState(cfg, self.reactor), cfg))
        self.port_number = self.port.getHost().port
        self.protocol_class: type[Recorder] = Recorder

    def _build(self, addr: Any) -> Recorder:
        p = self.protocol_class()
        p.factory = None  # type: ignore[assignment]
        self.protocols.append(p)
        return p

    def spin(self, cond: Callable[[], bool], seconds: float = 10.0, what: str = "") -> None:
        """Run the reactor until ``cond()`` holds; fail after ``seconds``."""
        end = time.monotonic() + seconds
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what or cond}")
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0.02)

    def client_context(self, tmp_path: Path, cn: str | None = "alice", issuer: Any = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.folder / "ca.pem"))
        if cn is not None:
            cert, key = self.pki.issue(cn, issuer).write(tmp_path, f"client-{cn}")
            ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def close(self) -> None:
        self.port.stopListening()
        for p in self.protocols:
            t = p.transport
            if t is not None and getattr(t, "connected", False):
                t.abortConnection()
        self.reactor.runUntilCurrent()
        self.reactor.doIteration(0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    (s.pki.folder / "ca.pem").write_bytes(s.pki.ca.cert_pem())
    yield s
    s.close()


def in_thread(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` in a thread; the dict gets "result" or "error" and "done"."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # reported by the test
            box["error"] = e
        box["done"] = True

    threading.Thread(target=run, daemon=True).start()
    return box


def test_handshake_gives_the_protocol_the_connection_and_identity(server: Server, tmp_path: Path) -> None:
    ctx = server.client_context(tmp_path)

    release = threading.Event()
    got: dict[str, bytes] = {}

    def client() -> bytes:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port_number), 5),
                             server_hostname="localhost") as s:
            s.settimeout(5)
            s.sendall(b"hello\n")
            got["echo"] = s.recv(100)
            release.wait(10)  # the connection stays open while the server side is inspected
            return got["echo"]

    box = in_thread(client)
    server.spin(lambda: "echo" in got or "done" in box, what="the client")
    try:
        assert got.get("echo") == b"echo:hello\n", box
        p = server.protocols[0]
        assert isinstance(p.handle, SSL.Connection)
        assert p.identity is not None and p.identity.account == "alice" and p.identity.presented
        assert p.transport.getPeer().host == "127.0.0.1"
        assert p.transport.getHost().port == server.port_number and p.transport.getHost().host == "127.0.0.1"
        assert p.transport.getTcpNoDelay()  # inherited from the listening socket
        # every other attribute of a live connection is in a slot (an idle connection's size)
        assert set(vars(p.transport)) == {"socket", "fileno", "protocol"}, vars(p.transport)
    finally:
        release.set()
    server.spin(lambda: "done" in box, what="the client to close")


def test_refused_certificate_gets_its_alert_not_a_reset(server: Server, tmp_path: Path) -> None:
    from trust import issue as I

    stranger = I.ca("some other CA")
    ctx = server.client_context(tmp_path, "mallory", issuer=stranger)

    def client() -> str:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port_number), 5),
                             server_hostname="localhost") as s:
            s.settimeout(5)
            s.sendall(b"x\n")  # TLS 1.3: the refusal arrives after the client's Finished
            return repr(s.recv(100))

    box = in_thread(client)
    server.spin(lambda: "done" in box, what="the client")
    err = box.get("error")
    assert isinstance(err, ssl.SSLError) and "UNKNOWN_CA" in str(err).upper(), box
    server.spin(lambda: server.protocols[0].lost is not None, what="the server side to close")


def test_linger_after_a_refusal_is_bounded(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused client that never closes is dropped after LINGER_SECONDS."""
    monkeypatch.setattr(_tls_socket, "LINGER_SECONDS", 0.3)
    raw = socket.create_connection(("127.0.0.1", server.port_number), 5)
    conn = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), raw)  # no certificate: refused in need mode
    conn.set_connect_state()
    raw.setblocking(False)

    def step() -> bool:
        try:
            conn.do_handshake()
            conn.send(b"x")
            conn.recv(10)
        except SSL.WantReadError:
            return False
        except SSL.Error:
            return True
        return False

    server.spin(lambda: step() or bool(server.protocols and server.protocols[0].lost is not None),
                what="the refusal")
    t0 = time.monotonic()
    server.spin(lambda: server.protocols[0].lost is not None, what="the lingering connection to end")
    assert time.monotonic() - t0 < 3
    raw.close()


def test_bytes_inside_openssl_are_delivered_when_reading_resumes(server: Server, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Paused at the first 7 bytes of a 60-byte record: the rest sits inside OpenSSL, and no
    epoll event will come for it; resumeProducing must deliver it."""
    monkeypatch.setattr(_tls_socket.TLSServer, "bufferSize", 7)

    class Pausing(Recorder):
        pause_first = True

    server.protocol_class = Pausing
    ctx = server.client_context(tmp_path)
    payload = b"0123456789" * 6
    box = in_thread(lambda: _send_and_hold(ctx, server.port_number, payload))
    server.spin(lambda: bool(server.protocols) and server.protocols[0].paused, what="the first bytes")
    p = server.protocols[0]
    for _ in range(10):  # paused: nothing more is delivered
        server.reactor.runUntilCurrent()
        server.reactor.doIteration(0.01)
    assert p.data == payload[:7]
    assert p.transport.getHandle().pending() > 0
    p.transport.resumeProducing()
    server.spin(lambda: p.data == payload, what="the buffered bytes")
    server.spin(lambda: "done" in box, what="the client")


def _send_and_hold(ctx: ssl.SSLContext, port: int, payload: bytes, sent: threading.Event | None = None) -> bytes:
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 5), server_hostname="localhost") as s:
        s.settimeout(5)
        s.sendall(payload)
        if sent is not None:
            sent.set()
        return s.recv(1)  # ends when the server closes


def test_write_backpressure_pauses_and_resumes_the_producer(server: Server, tmp_path: Path) -> None:
    """A client that does not read fills the socket: the registered producer is paused, and
    resumed once the client reads."""
    ctx = server.client_context(tmp_path)
    gate = threading.Event()
    total = 8 * 1024 * 1024

    def client() -> int:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port_number), 5),
                             server_hostname="localhost") as s:
            s.settimeout(10)
            s.sendall(b"go")
            gate.wait(10)
            got = 0
            while got < total:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            return got

    box = in_thread(client)
    server.spin(lambda: bool(server.protocols) and server.protocols[0].data == b"go", what="the request")
    p = server.protocols[0]
    events: list[str] = []

    class Producer:
        def pauseProducing(self) -> None:
            events.append("pause")

        def resumeProducing(self) -> None:
            events.append("resume")

        def stopProducing(self) -> None:
            events.append("stop")

    p.transport.registerProducer(Producer(), True)
    chunk = b"x" * 65536
    sent = 0
    while "pause" not in events and sent < total:
        p.transport.write(chunk)
        sent += len(chunk)
    assert "pause" in events, "the transport never paused its producer"
    gate.set()
    server.spin(lambda: "resume" in events, what="the producer to resume")
    while sent < total:
        p.transport.write(chunk)
        sent += len(chunk)
    server.spin(lambda: "done" in box, what="the client to read everything")
    assert box.get("result") == total, box


def test_lose_connection_sends_close_notify(server: Server, tmp_path: Path) -> None:
    ctx = server.client_context(tmp_path)

    def client() -> bytes:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port_number), 5),
                             server_hostname="localhost", suppress_ragged_eofs=False) as s:
            s.settimeout(5)
            s.sendall(b"x")
            return s.recv(10)  # b"" only after a clean close_notify (a bare FIN raises)

    box = in_thread(client)
    server.spin(lambda: bool(server.protocols) and server.protocols[0].data == b"x", what="the request")
    server.protocols[0].transport.loseConnection()
    server.spin(lambda: "done" in box, what="the client")
    assert box.get("result") == b"", box


def test_streamed_bytes_arrive_whole_and_in_joined_records(server: Server, tmp_path: Path) -> None:
    """256 KiB in 16 KiB TLS records: every byte arrives in order, and records that are
    already there are handed over together (fewer, larger dataReceived calls)."""
    sizes: list[int] = []

    sent = threading.Event()

    class Sizes(Recorder):
        def handshakeCompleted(self) -> None:
            self.transport.pauseProducing()  # read nothing until the client has sent it all

        def dataReceived(self, data: bytes) -> None:
            sizes.append(len(data))
            self.data += data

    server.protocol_class = Sizes
    ctx = server.client_context(tmp_path)
    payload = bytes(range(256)) * 1024
    box = in_thread(lambda: _send_and_hold(ctx, server.port_number, payload, sent))
    server.spin(lambda: sent.is_set() and bool(server.protocols), what="the client to send everything")
    server.protocols[0].transport.resumeProducing()
    server.spin(lambda: len(server.protocols[0].data) == len(payload), what="the whole payload")
    assert server.protocols[0].data == payload
    assert max(sizes) > 16384 and max(sizes) <= _tls_socket.TLSServer.bufferSize
    server.protocols[0].transport.loseConnection()
    server.spin(lambda: "done" in box, what="the client")


def test_lose_connection_before_the_handshake_closes_at_once(server: Server) -> None:
    """A drain that meets a connection still in its handshake closes it (no waiting for the deadline)."""
    raw = socket.create_connection(("127.0.0.1", server.port_number), 5)
    try:
        server.spin(lambda: bool(server.protocols) and server.protocols[0].transport is not None,
                    what="the accept")
        server.protocols[0].transport.loseConnection()
        server.spin(lambda: server.protocols[0].lost is not None, what="the close")
        raw.settimeout(5)
        assert raw.recv(10) == b""
    finally:
        raw.close()


def test_small_records_waiting_in_the_socket_are_all_delivered(server: Server, tmp_path: Path) -> None:
    """40 small records (as WebSocket messages are) queued before the server reads: reading
    stops after each small record instead of meeting EAGAIN, and the poll reports the rest,
    so every byte still arrives, in order, one record per dataReceived."""
    sizes: list[int] = []
    sent = threading.Event()
    records = [b"message %02d;" % i for i in range(40)]

    class Sizes(Recorder):
        def handshakeCompleted(self) -> None:
            self.transport.pauseProducing()

        def dataReceived(self, data: bytes) -> None:
            sizes.append(len(data))
            self.data += data

    def client() -> bytes:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port_number), 5),
                             server_hostname="localhost") as s:
            s.settimeout(5)
            for r in records:
                s.sendall(r)  # one TLS record each
            sent.set()
            return s.recv(1)

    server.protocol_class = Sizes
    ctx = server.client_context(tmp_path)
    box = in_thread(client)
    server.spin(lambda: sent.is_set() and bool(server.protocols), what="the client to send everything")
    server.protocols[0].transport.resumeProducing()
    server.spin(lambda: server.protocols[0].data == b"".join(records), what="every record")
    assert sizes == [len(r) for r in records]
    server.protocols[0].transport.loseConnection()
    server.spin(lambda: "done" in box, what="the client")
