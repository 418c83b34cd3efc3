"""Issue 12: no session tickets on the wire, counted on real handshakes with the real gateway."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.client import client_context
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream, account_text
from tests.harness.wait import wait_for

NEW_SESSION_TICKET = 4


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Gateway, Pki]]:
    upstream = RecordingUpstream(answer=account_text)
    pki = Pki(tmp_path / "pki")
    cfg = write_config(tmp_path, pki, upstream=upstream.url)
    try:
        with Gateway(cfg) as gw:
            yield gw, pki
    finally:
        upstream.close()


def count_tickets(port: int, ctx: ssl.SSLContext) -> tuple[int, str]:
    """Handshake, one request and its answer; returns (NewSessionTickets received, TLS version)."""
    received: list[int] = []

    def on_message(conn: object, direction: str, version: object, content_type: object, msg_type: object,
                   data: bytes) -> None:
        if direction == "read" and content_type == ssl._TLSContentType.HANDSHAKE:  # type: ignore[attr-defined]
            received.append(int(msg_type))  # type: ignore[call-overload]

    ctx._msg_callback = on_message  # type: ignore[attr-defined]
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 5), server_hostname="localhost") as s:
        version = s.version() or ""
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while s.recv(65536):  # tickets (TLS 1.3) arrive after the handshake: read to the end
            pass
    assert received, "the message callback saw no handshake message"
    return received.count(NEW_SESSION_TICKET), version


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_gateway_sends_no_session_ticket(gateway: tuple[Gateway, Pki], version: ssl.TLSVersion) -> None:
    gw, pki = gateway
    ctx = client_context(pki.client("alice"), pki.ca_pem, minimum=version, maximum=version)
    tickets, negotiated = count_tickets(gw.port, ctx)
    assert negotiated == {ssl.TLSVersion.TLSv1_3: "TLSv1.3", ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[version]
    assert tickets == 0
    wait_for(lambda: "TLS 1.3 session tickets per handshake: 0" in gw.log(), 10, what="the ticket self-check line")


def test_ticket_counter_sees_tickets_from_a_default_server(pki: Pki) -> None:
    """The counter above can fail: a default OpenSSL TLS 1.3 server is seen sending its tickets."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        raw, _ = listener.accept()
        with server_ctx.wrap_socket(raw, server_side=True) as s:
            s.recv(65536)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        tickets, negotiated = count_tickets(port, client_context(None, pki.ca_pem))
    finally:
        t.join(10)
        listener.close()
    assert negotiated == "TLSv1.3"
    assert tickets == server_ctx.num_tickets == 2


def test_operator_openssl_conf_without_numtickets_is_reported(tmp_path: Path) -> None:
    """An operator's own OPENSSL_CONF is kept; the start log says how many tickets it lets through."""
    upstream = RecordingUpstream(answer=account_text)
    pki = Pki(tmp_path / "pki")
    own = tmp_path / "openssl.cnf"
    own.write_text("# an operator's OpenSSL configuration without NumTickets\n")
    cfg = write_config(tmp_path, pki, upstream=upstream.url)
    try:
        with Gateway(cfg, env={"OPENSSL_CONF": str(own)}) as gw:
            ctx = client_context(pki.client("alice"), pki.ca_pem, minimum=ssl.TLSVersion.TLSv1_3)
            assert count_tickets(gw.port, ctx) == (2, "TLSv1.3")
            wait_for(lambda: "TLS 1.3 handshakes send 2 session ticket(s)" in gw.log(), 10, what="the warning")
    finally:
        upstream.close()
