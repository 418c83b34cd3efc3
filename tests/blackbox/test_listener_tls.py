"""Issue 4 black-box tests: TLS hardening and connection limits of the real gateway process."""

from __future__ import annotations

import os
import struct
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from OpenSSL import SSL

from tests.harness.client import client_context, request
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream, account_text
from tests.harness.wait import wait_for


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    u = RecordingUpstream(answer=account_text)
    yield u
    u.close()


@pytest.fixture
def gateway(tmp_path: Path, upstream: RecordingUpstream) -> Iterator[tuple[Gateway, Pki]]:
    pki = Pki(tmp_path / "pki")
    cfg = write_config(tmp_path, pki, upstream=upstream.url,
                       extra={"listen": {"handshake_timeout": 1, "max_connection_age": 2.5}})
    with Gateway(cfg) as gw:
        yield gw, pki


def _get(sock: Any) -> bytes:
    """One GET on an open TLS socket; returns the whole response (head and body)."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                return data
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def _blocking_socket(port: int) -> socket.socket:
    """A blocking loopback socket with a 5 s receive timeout (pyOpenSSL needs blocking I/O)."""
    sock = socket.create_connection(("127.0.0.1", port), 5)
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
    return sock


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_saved_session_is_not_resumed(gateway: tuple[Gateway, Pki], version: ssl.TLSVersion) -> None:
    """CERT-14: a client offering its saved TLS session gets a full handshake."""
    gw, pki = gateway
    ctx = client_context(pki.client("alice"), pki.ca_pem, minimum=version, maximum=version)
    first = ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port), 5), server_hostname="localhost")
    assert b"user=alice" in _get(first)  # TLS 1.3 tickets (if any) arrive with the first read
    saved = first.session
    first.close()
    assert saved is not None
    again = ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port), 5), server_hostname="localhost",
                            session=saved)
    try:
        assert again.session_reused is False
        assert b"user=alice" in _get(again)
    finally:
        again.close()


def test_renegotiation_is_refused(gateway: tuple[Gateway, Pki]) -> None:
    """CERT-12: client-initiated TLS 1.2 renegotiation fails; the first identity stays."""
    gw, pki = gateway
    alice = pki.client("alice")
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file(str(alice.cert_path))
    ctx.use_privatekey_file(str(alice.key_path))
    ctx.load_verify_locations(pki.ca_pem)
    ctx.set_verify(SSL.VERIFY_PEER)
    sock = _blocking_socket(gw.port)
    conn = SSL.Connection(ctx, sock)
    conn.set_tlsext_host_name(b"localhost")
    conn.set_connect_state()
    conn.do_handshake()
    assert conn.get_protocol_version_name() == "TLSv1.2"
    assert b"user=alice" in _get(conn)
    assert conn.renegotiate()
    with pytest.raises(SSL.Error) as err:
        conn.do_handshake()
    assert "no renegotiation" in str(err.value)
    sock.close()


def _client_hello(version: bytes) -> bytes:
    """A minimal ClientHello offering only ``version`` (no supported_versions extension)."""
    suites = bytes.fromhex("c02bc02fc013c014002f0035")
    exts = (bytes.fromhex("000a000600040017001d")  # supported_groups: P-256, X25519
            + bytes.fromhex("000b00020100")  # ec_point_formats: uncompressed
            + bytes.fromhex("000d000a00080403050308040805"))  # signature_algorithms
    body = (version + os.urandom(32) + b"\x00" + len(suites).to_bytes(2, "big") + suites + b"\x01\x00"
            + len(exts).to_bytes(2, "big") + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


@pytest.mark.parametrize("version", [b"\x03\x02", b"\x03\x01"], ids=["tls1.1", "tls1.0"])
def test_old_tls_versions_are_refused(gateway: tuple[Gateway, Pki], version: bytes) -> None:
    gw, _ = gateway
    with socket.create_connection(("127.0.0.1", gw.port), 5) as s:
        s.sendall(_client_hello(version))
        data = s.recv(64)
    # a fatal alert (21), description protocol_version (70): no ServerHello
    assert data[:1] == b"\x15" and data[5:7] == b"\x02\x46", data
    # the same hello for TLS 1.2 gets a ServerHello: the probe itself is sound
    with socket.create_connection(("127.0.0.1", gw.port), 5) as s:
        s.sendall(_client_hello(b"\x03\x03"))
        assert s.recv(64)[:1] == b"\x16"


def test_slow_handshake_is_cut_at_the_deadline(gateway: tuple[Gateway, Pki]) -> None:
    gw, _ = gateway
    with socket.create_connection(("127.0.0.1", gw.port), 5) as s:
        s.sendall(_client_hello(b"\x03\x03")[:20])  # a third of a ClientHello, then nothing
        start = time.monotonic()
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        took = time.monotonic() - start
    assert 0.8 <= took <= 5.0, took  # handshake_timeout = 1


def test_connection_age_limit_closes_keep_alive(gateway: tuple[Gateway, Pki]) -> None:
    gw, pki = gateway
    ctx = client_context(pki.client("alice"), pki.ca_pem)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port), 5), server_hostname="localhost") as s:
        start = time.monotonic()
        r1 = _get(s)
        assert r1.startswith(b"HTTP/1.1 200") and r1.endswith(b"user=alice\n")
        assert b"connection: close" not in r1.lower()
        r1b = _get(s)  # still young: kept alive
        assert r1b.startswith(b"HTTP/1.1 200") and b"connection: close" not in r1b.lower()
        # idle at its maximum age: the gateway closes it (a browser must not reuse an old proof)
        s.settimeout(6)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        assert 2.0 <= time.monotonic() - start <= 6.0
    # a new connection (a fresh full handshake) works right away
    assert request(gw.port, cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
