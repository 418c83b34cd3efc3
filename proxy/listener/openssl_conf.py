"""Process-wide OpenSSL settings that pyOpenSSL cannot make per context: no TLS 1.3 tickets.

OpenSSL sends two TLS 1.3 NewSessionTicket messages per handshake even with
``OP_NO_TICKET`` and the session cache off; only ``SSL_CTX_set_num_tickets`` (not bound by
pyOpenSSL or cryptography) or the configuration command ``NumTickets = 0`` stop them.
certgate ships an OpenSSL configuration file with that command and points ``OPENSSL_CONF``
at it before OpenSSL is loaded (:func:`configure_process`). Because the setting cannot be
checked on a context, :func:`tickets_per_handshake` measures it with one in-memory
handshake, and the gateway logs the count at start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, MutableMapping

#: certgate's OpenSSL configuration file (``NumTickets = 0`` for every new SSL_CTX).
CONF_PATH = Path(__file__).with_name("openssl-certgate.cnf")


def configure_process(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set ``OPENSSL_CONF`` to :data:`CONF_PATH` unless the operator set it; return the value.

    Only effective when called before ``cryptography`` (and so OpenSSL) is first imported
    in this process; child processes inherit the variable. Does not check the operator's
    own file (see :func:`tickets_per_handshake`).
    """
    if not environ.get("OPENSSL_CONF"):
        environ["OPENSSL_CONF"] = str(CONF_PATH)
    return environ["OPENSSL_CONF"]


def openssl_loaded() -> bool:
    """True when OpenSSL is already loaded here (so OPENSSL_CONF set now has no effect)."""
    return "cryptography.hazmat.bindings._rust" in sys.modules


def tickets_per_handshake(server_ctx: Any, max_rounds: int = 20) -> int:
    """NewSessionTicket messages ``server_ctx`` sends in one TLS 1.3 handshake, counted.

    Runs a full handshake between ``server_ctx`` (a pyOpenSSL server context that does not
    require a client certificate) and a throwaway client over memory BIOs, then lets the
    client read what the server sent after the handshake. Raises RuntimeError when the
    handshake does not finish within ``max_rounds`` exchanges. Does not check TLS 1.2.
    """
    from OpenSSL import SSL
    from OpenSSL._util import ffi, lib

    seen = [0]

    def on_message(write_p: int, version: int, content_type: int, buf: Any, length: int, ssl: Any,
                   arg: Any) -> None:
        if not write_p and content_type == 22 and length > 0 and ffi.cast("unsigned char *", buf)[0] == 4:
            seen[0] += 1

    cctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    cctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    cctx.set_verify(SSL.VERIFY_NONE)
    callback = ffi.callback("void(int, int, int, void *, size_t, SSL *, void *)", on_message)
    lib.SSL_CTX_set_msg_callback(cctx._context, callback)
    client, server = SSL.Connection(cctx, None), SSL.Connection(server_ctx, None)
    client.set_connect_state()
    server.set_accept_state()
    done = [False, False]
    for _ in range(max_rounds):
        for i, conn in enumerate((client, server)):
            if not done[i]:
                try:
                    conn.do_handshake()
                    done[i] = True
                except SSL.WantReadError:
                    pass
        moved = _pump(client, server) + _pump(server, client)
        if all(done) and not moved:
            break
    else:
        raise RuntimeError("the ticket self-check handshake did not finish")
    try:
        client.recv(1)  # processes the post-handshake messages already delivered
    except SSL.WantReadError:
        pass
    return seen[0]


def _pump(src: Any, dst: Any) -> int:
    from OpenSSL import SSL

    moved = 0
    while True:
        try:
            data = src.bio_read(65536)
        except SSL.WantReadError:
            return moved
        dst.bio_write(data)
        moved += len(data)
