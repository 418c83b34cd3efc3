"""The client certificate is parsed at most once per connection, through the whole real gateway.

The real service (``make_service``: listener, verify callback, verdict cache, mapping,
identify(), gate, login, session manager) runs on a private epoll reactor driven by this
test thread; the client is a blocking stdlib ``ssl`` connection in a thread on loopback.
Every certificate parse entry the code could use is wrapped with a counter that counts
only the client's leaf: ``cryptography`` loaders, pyOpenSSL loaders and conversions, and
re-encodings (``public_bytes`` of the leaf, seen through a profile hook because the
method belongs to a Rust type that cannot be patched; ``crypto.dump_certificate``).
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import crypto
from twisted.internet import epollreactor

from proxy.app.service import make_service
from proxy.config import load_config
from proxy.listener.verify import HandshakeVerifier
from tests.harness.client import https_connection, send
from tests.harness.pki import Pki
from tests.harness.sessions import PASSWORD, session_config
from tests.harness.upstream import RecordingUpstream


class LeafCounter:
    """Counts parses and encodings of one certificate (by its DER) while installed."""

    def __init__(self, leaf_der: bytes) -> None:
        self.leaf_der = leaf_der
        self.leaf_pem = x509.load_der_x509_certificate(leaf_der).public_bytes(Encoding.PEM)
        self.leaf = x509.load_der_x509_certificate(leaf_der)
        self.counts: Counter[str] = Counter()
        self._busy = threading.local()

    def parses(self) -> int:
        return sum(n for k, n in self.counts.items() if k.startswith("parse:"))

    def encodings(self) -> int:
        return sum(n for k, n in self.counts.items() if k.startswith("encode:"))

    def _is_leaf(self, data: Any) -> bool:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            return data == self.leaf_der or (self.leaf_pem.strip() in data)
        if isinstance(data, str):
            return self._is_leaf(data.encode("latin-1"))
        return False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        leaf = self._is_leaf

        def x509_leaf(cert: Any) -> bool:
            try:
                return bool(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) == self.leaf_der)
            except Exception:
                return False

        def crypto_leaf(cert: Any) -> bool:
            return isinstance(cert, x509.Certificate) and cert == self.leaf

        for owner in (x509, sys.modules["cryptography.x509.base"]):
            for name in ("load_der_x509_certificate", "load_pem_x509_certificate", "load_pem_x509_certificates"):
                if hasattr(owner, name):
                    self._patch(monkeypatch, owner, name, f"parse:{name}", lambda data, *a, **k: leaf(data))
        self._patch(monkeypatch, crypto, "load_certificate", "parse:crypto.load_certificate",
                    lambda kind, data, *a, **k: leaf(data))
        self._patch(monkeypatch, crypto.X509, "to_cryptography", "parse:X509.to_cryptography",
                    lambda cert, *a, **k: x509_leaf(cert))
        self._patch_classmethod(monkeypatch, crypto.X509, "from_cryptography", "parse:X509.from_cryptography",
                                crypto_leaf)
        self._patch(monkeypatch, crypto, "dump_certificate", "encode:crypto.dump_certificate",
                    lambda kind, cert, *a, **k: x509_leaf(cert))

    def _patch(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, label: str,
               which: Callable[..., bool]) -> None:
        original = getattr(owner, name)
        counter = self

        def wrapper(*args: Any, **kw: Any) -> Any:
            with counter._counting(label, which, args, kw):
                return original(*args, **kw)

        monkeypatch.setattr(owner, name, wrapper)

    def _patch_classmethod(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str, label: str,
                           which: Callable[[Any], bool]) -> None:
        original = getattr(owner, name)  # bound to owner
        counter = self

        def wrapper(cls: Any, cert: Any) -> Any:
            with counter._counting(label, which, (cert,), {}):
                return original(cert)

        monkeypatch.setattr(owner, name, classmethod(wrapper))

    @contextmanager
    def _counting(self, label: str, which: Callable[..., bool], args: tuple[Any, ...], kw: dict[str, Any]
                  ) -> Iterator[None]:
        """Count this call if it concerns the leaf; calls made inside it (e.g. to_cryptography ->
        load_der_x509_certificate, or the counter's own checks) are not counted again."""
        if getattr(self._busy, "on", False):
            yield
            return
        self._busy.on = True
        try:
            if which(*args, **kw):
                self.counts[label] += 1
            yield
        finally:
            self._busy.on = False

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        """Counts ``public_bytes`` calls on the leaf (a method of a Rust type: not patchable)."""
        if event == "c_call" and getattr(arg, "__name__", "") == "public_bytes":
            target = getattr(arg, "__self__", None)
            if isinstance(target, x509.Certificate) and target == self.leaf:
                self.counts["encode:Certificate.public_bytes"] += 1


class InProcessGateway:
    """The real gateway service on a private epoll reactor, driven by :meth:`spin`."""

    def __init__(self, config: Path) -> None:
        self.reactor = epollreactor.EPollReactor()
        self.reactor.getThreadPool().start()  # the reactor is driven by hand, not run()
        self.cfg = load_config(config)
        self.port = self.cfg.listen.port
        self.service = make_service(self.cfg, self.reactor)
        self.service.startService()

    def spin(self, cond: Callable[[], bool], seconds: float = 20.0, what: str = "") -> None:
        end = time.monotonic() + seconds
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what or cond}")
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0.01)

    def run(self, fn: Callable[[], Any], what: str) -> Any:
        """Run the blocking client step ``fn`` in a thread while the reactor spins; its result."""
        box: dict[str, Any] = {}

        def step() -> None:
            try:
                box["result"] = fn()
            except BaseException as e:  # reported below
                box["error"] = e
            box["done"] = True

        threading.Thread(target=step, daemon=True).start()
        self.spin(lambda: "done" in box, what=what)
        if "error" in box:
            raise box["error"]
        return box["result"]

    def close(self) -> None:
        d = self.service.stopService()
        done: list[object] = []
        d.addBoth(done.append)
        self.spin(lambda: bool(done), what="the gateway to stop")
        self.reactor.getThreadPool().stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[InProcessGateway, Pki]]:
    pki = Pki(tmp_path / "pki")
    upstream = RecordingUpstream()
    cfg = session_config(tmp_path, pki, upstream.url, store="memory")
    sink = HandshakeVerifier.refusal_sink
    sighup = signal.getsignal(signal.SIGHUP)
    gw = InProcessGateway(cfg)
    try:
        yield gw, pki
    finally:
        gw.close()
        upstream.close()
        HandshakeVerifier.refusal_sink = sink
        signal.signal(signal.SIGHUP, sighup)


def _connection(gw: InProcessGateway, pki: Pki) -> http.client.HTTPSConnection:
    return https_connection(gw.port, pki.client("alice"), pki.ca_pem, timeout=15)


def _send(conn: http.client.HTTPSConnection, port: int, method: str, path: str, headers: dict[str, str],
          body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    return send(conn, method, path, headers=headers, body=body)


def test_the_client_leaf_is_parsed_at_most_once_per_connection(gateway: tuple[InProcessGateway, Pki],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    gw, pki = gateway
    leaf_der = x509.load_pem_x509_certificate(pki.client("alice").cert_path.read_bytes()).public_bytes(Encoding.DER)
    counter = LeafCounter(leaf_der)
    counter.install(monkeypatch)
    steps: list[tuple[str, int]] = []  # (after what, parses of the leaf so far)
    sys.setprofile(counter.profile)
    try:
        # connection 1: handshake + identify(), then a session login, then a session-mode request
        conn = _connection(gw, pki)
        gw.run(conn.connect, "the first handshake")
        gw.spin(lambda: any(c.identity is not None for c in gw.service.parts["http"].connections),
                what="the connection to be identified")
        steps.append(("handshake 1 + identify", counter.parses()))
        # what the first connection presented stays alive here, as it does while a browser
        # keeps one of its parallel connections open
        held = next(c.identity for c in gw.service.parts["http"].connections if c.identity is not None).certificate
        status, headers, body = gw.run(lambda: _send(
            conn, gw.port, "POST", "/.certgate/api/auth",
            {"Content-Type": "application/json", "Accept": "application/json"},
            json.dumps({"account": "alice", "password": PASSWORD}).encode()), "the login")
        assert status == 200, body
        steps.append(("login", counter.parses()))
        cookie = (headers.get_all("Set-Cookie") or [""])[0].split(";", 1)[0]
        assert cookie.startswith("__Host-certgate="), headers
        status, _, body = gw.run(lambda: _send(conn, gw.port, "GET", "/app", {"Cookie": cookie,
                                                                               "Accept": "application/json"}),
                                 "a session request on the login connection")
        assert status == 200 and json.loads(body)["path"] == "/app", body
        steps.append(("session request on connection 1", counter.parses()))
        gw.run(conn.close, "closing")

        # connection 2: a new handshake, then two session-mode requests on it
        conn = _connection(gw, pki)
        for n in (1, 2):
            status, _, body = gw.run(lambda: _send(conn, gw.port, "GET", f"/app/{n}",
                                                   {"Cookie": cookie, "Accept": "application/json"}),
                                     f"session request {n}")
            assert status == 200 and json.loads(body)["path"] == f"/app/{n}", body
            steps.append((f"handshake 2 + session request {n}" if n == 1 else f"session request {n}",
                          counter.parses()))
        live = [c.identity.certificate for c in gw.service.parts["http"].connections if c.identity is not None]
        gw.run(conn.close, "closing")
    finally:
        sys.setprofile(None)
    # one parse at the first handshake, none per request, and none for a second connection
    # presenting the same chain while the first one's value is alive: it is shared
    assert steps == [("handshake 1 + identify", 1), ("login", 1), ("session request on connection 1", 1),
                     ("handshake 2 + session request 1", 1), ("session request 2", 1)], (steps, counter.counts)
    assert live and all(c is held for c in live)
    # the one way DER leaves OpenSSL, once per connection; nothing re-encodes the parsed leaf
    assert counter.encodings() == 2, counter.counts
