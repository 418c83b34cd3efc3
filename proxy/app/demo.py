"""``certgate demo-pki`` and ``certgate demo-upstream``: what ``make run`` starts.

The demo PKI is for trying certgate out, never for production: its CA key sits next
to the certificates.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from trust.cli_errors import OperatorError, Parser
from trust.escape import safe_html

DEMO_CLIENTS = ("alice", "bob")


def write_demo_pki(folder: Path, clients: tuple[str, ...] = DEMO_CLIENTS, key_type: str = "ec256",
                   password: str | None = None) -> dict[str, object]:
    """Write CA, server and client certificates under ``folder``; returns what was written.

    Layout: ``ca.pem`` (+ ``ca.key``), ``server.pem``/``server.key`` (localhost, 127.0.0.1, ::1),
    ``trust.d/demo-ca.pem`` (the trust store), and per client ``NAME.pem``, ``NAME.key``,
    ``NAME.p12`` (password printed; the same for every client of one run).
    """
    from trust import issue as I

    folder.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(9)
    root = I.ca("certgate demo CA", key_type=key_type)  # type: ignore[arg-type]
    root.write(folder, "ca")
    srv = I.server(root, ("localhost", "127.0.0.1", "::1"), key_type=key_type)  # type: ignore[arg-type]
    srv.write(folder, "server")
    store = folder / "trust.d"
    store.mkdir(exist_ok=True)
    (store / "demo-ca.pem").write_bytes(root.cert_pem())
    written: dict[str, object] = {"ca": str(folder / "ca.pem"), "server": str(folder / "server.pem"),
                                  "trust_store": str(store), "password": password, "clients": {}}
    for cn in clients:
        c = I.client(root, cn, key_type=key_type, emails=[f"{cn}@example.test"])
        cert_path, key_path = c.write(folder, cn)
        p12 = folder / f"{cn}.p12"
        p12.write_bytes(c.p12(password.encode(), friendly_name=f"{cn} (certgate demo)".encode()))
        p12.chmod(0o600)
        written["clients"][cn] = {"cert": str(cert_path), "key": str(key_path), "p12": str(p12),  # type: ignore[index]
                                  "fingerprint": c.fingerprint}
    return written


def demo_pki_main(argv: list[str]) -> int:
    ap = Parser(prog="certgate demo-pki",
                                 description="Write a demo CA, a server certificate for localhost/127.0.0.1 and "
                                             "client certificates (PEM and .p12).")
    ap.add_argument("dir", help="folder to write into (created if missing)")
    ap.add_argument("--client", action="append", default=None, metavar="CN",
                    help=f"client CN to issue (repeatable; default: {', '.join(DEMO_CLIENTS)})")
    ap.add_argument("--key-type", default="ec256", choices=("ec256", "ec384", "rsa2048", "rsa3072", "ed25519"))
    ap.add_argument("--password", help="password of the .p12 files (default: random, printed)")
    ns = ap.parse_args(argv)
    out = write_demo_pki(Path(ns.dir), tuple(ns.client or DEMO_CLIENTS), ns.key_type, ns.password)
    print(f"demo PKI written to {ns.dir}")
    print(f"  CA:            {out['ca']}  (trust store: {out['trust_store']})")
    print(f"  server:        {out['server']}  (localhost, 127.0.0.1, ::1)")
    for cn, c in out["clients"].items():  # type: ignore[attr-defined]
        print(f"  client {cn:<7} {c['cert']}  {c['key']}  {c['p12']}")
    print(f"  .p12 password: {out['password']}")
    return 0


def echo_resource() -> object:
    """The demo upstream's one resource: every request is answered with the headers it carried
    (HTML, or JSON when asked) and logged as one JSON line ``{"method", "path", "x-remote-user"}``
    on standard output, so ``make run`` (and the browser suite) can see what the upstream received."""
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    class Echo(Resource):
        isLeaf = True

        def render(self, request: Request) -> bytes:
            headers = [(k.decode("latin-1"), v.decode("latin-1"))
                       for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs]
            info = {"method": request.method.decode(), "path": request.uri.decode("latin-1"), "headers": headers}
            who = dict((k.lower(), v) for k, v in headers).get("x-remote-user", "-")
            print(json.dumps({"method": info["method"], "path": info["path"], "x-remote-user": who}), flush=True)
            if b"json" in (request.getHeader(b"accept") or b""):
                request.setHeader(b"content-type", b"application/json")
                return json.dumps(info, indent=1).encode()
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            rows = "".join(f"<tr><th>{safe_html(k)}</th><td>{safe_html(v)}</td></tr>" for k, v in headers)
            user = dict((k.lower(), v) for k, v in headers).get("x-remote-user", "(none)")
            return (f"<!doctype html><title>certgate demo upstream</title><h1>Hello, {safe_html(user)}</h1>"
                    f"<p>certgate forwarded <code>{safe_html(info['method'])} {safe_html(info['path'])}</code>"
                    f" with these headers:</p><table>{rows}</table>").encode()

    return Echo()


def demo_upstream_main(argv: list[str]) -> int:
    """A tiny upstream that answers every request with the headers it received."""
    ap = Parser(prog="certgate demo-upstream",
                                 description="Serve a page showing the request headers (a stand-in upstream).")
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9090)
    ns = ap.parse_args(argv)
    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError
    from twisted.web.server import Site

    try:
        # Twisted's own types: Site's protocol is a proxyForInterface class, outside listenTCP's ServerFactory bound
        reactor.listenTCP(ns.port, Site(echo_resource()), interface=ns.address)  # type: ignore[arg-type]
    except CannotListenError as e:
        why = getattr(e.socketError, "strerror", None) or str(e.socketError)
        raise OperatorError("cannot listen", f"{ns.address}:{ns.port}", why) from None
    print(f"demo upstream on http://{ns.address}:{ns.port}/", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(demo_pki_main(sys.argv[1:]))
