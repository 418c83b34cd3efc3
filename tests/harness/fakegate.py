"""Run certgate's HTTP layer behind TLS with a fake gate, for forwarding tests and profiling.

Usage (by :class:`tests.harness.gateway.GatewayProcess`)::

    python tests/harness/fakegate.py '{"config": {...}, "pki": {...}, "plain": false}'

Prints ``{"port": N}`` once listening on 127.0.0.1. The fake gate decides by path:
``/_gate/deny`` -> 401 Response; ``/_gate/local`` -> Local handler reporting the body it got;
``/_gate/deferred/...`` -> Forward through a Deferred; ``/_gate/close-session/SID`` -> closes the
tunnels of session SID; ``/_gate/count`` -> JSON with the registry size (``registered``), idle
upstream connections and the factory counters; ``/anon/...`` -> unauthenticated Forward; anything
else -> Forward with ``account`` = the client certificate's CN and ``session_id`` from
``X-Test-Session``. Environment: ``CERTGATE_SLOW_WRITES=1`` turns the direct-write shortcut off
(for A/B profiling), ``CERTGATE_TLS_NOBUFFER=1`` uses the unbuffered TLS protocol class.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from types import SimpleNamespace
from typing import Any

from cryptography.x509.oid import NameOID


def main() -> None:
    spec = json.loads(sys.argv[1])
    from twisted.internet import epollreactor

    epollreactor.install()
    from OpenSSL.crypto import FILETYPE_ASN1, FILETYPE_PEM, dump_certificate, load_certificate, load_privatekey
    from twisted.internet import reactor, ssl
    from twisted.internet.address import IPv4Address
    from twisted.internet.defer import Deferred
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.protocols.tls import TLSMemoryBIOFactory

    from proxy.gate.policy import ForwardPolicy
    from proxy.sessions.injection import PresenceRewrites
    from proxy.http.factory import GatewayFactory
    from proxy.listener.identity import ConnectionIdentity
    from proxy.http.messages import Forward, Local, json_response, text_response
    from proxy.http.tunnel import TunnelRegistry
    from proxy.http.upstream import UpstreamPools
    from tests.harness.config import engine_config
    from tests.harness.plain_gateway import PlainGatewayFactory
    from trust.presented import PresentedCertificate

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    c = spec["config"]
    config = engine_config(c["upstream"], c.get("overrides"), c.get("routes"))
    tunnels = TunnelRegistry()
    pools = UpstreamPools(config.routes, reactor, reactor)

    def identify(transport: Any, now: float) -> Any:
        peer_cert = None if spec["plain"] else transport.getHandle().get_peer_certificate()
        peer = transport.getPeer()
        if peer_cert is None:
            return ConnectionIdentity(presented=False, verdict=None, account="bench", mapping_error=None,
                                      handshake_at=now, full_handshake=True, protocol="", cipher="",
                                      client_ip=peer.host, client_port=peer.port)
        cert = PresentedCertificate.parse(dump_certificate(FILETYPE_ASN1, peer_cert))
        leaf = cert.leaf
        cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        verdict = SimpleNamespace(ok=True, fingerprint=cert.fingerprint, subject=leaf.subject.rfc4514_string(),
                                  issuer=leaf.issuer.rfc4514_string(), summary="ok")
        return ConnectionIdentity(presented=True, verdict=verdict, account=cn, mapping_error=None,  # type: ignore[arg-type]
                                  handshake_at=now, full_handshake=True, protocol="TLSv1.3", cipher="",
                                  client_ip=peer.host, client_port=peer.port, certificate=cert)

    def local_handler(head: Any, body: bytes, conn: Any) -> Any:
        return json_response(200, {"local": True, "len": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    policy = ForwardPolicy(config, PresenceRewrites(config.sessions))

    class FakeGate:
        def decide(self, head: Any, conn: Any) -> Any:
            d = self._decide(head, conn)  # like the real gate: every Forward leaves with its policy set
            if isinstance(d, Forward):
                return policy.apply(d, head)
            if isinstance(d, Deferred):
                return d.addCallback(policy.settle, head)
            return d

        def _decide(self, head: Any, conn: Any) -> Any:
            t = head.target
            account = conn.identity.account
            sid = head.get(b"x-test-session")
            fwd = Forward(config.route_for(head.path), account=account,
                          session_id=sid.decode() if sid else None)
            if t.startswith(b"/_gate/"):
                if t.startswith(b"/_gate/deny"):
                    return text_response(401, "login required")
                if t.startswith(b"/_gate/local"):
                    return Local(local_handler, max_body=1 << 20)
                if t.startswith(b"/_gate/close-session/"):
                    n = tunnels.close_session(t.split(b"/")[3].decode())
                    return json_response(200, {"closed": n})
                if t.startswith(b"/_gate/deferred"):
                    d: Deferred[Any] = Deferred()
                    reactor.callLater(0.01, d.callback, fwd)
                    return d
                if t.startswith(b"/_gate/count"):
                    f = gw_factory[0]
                    return json_response(200, {"registered": tunnels.count(), "idle": pools.idle_count(),
                                               "live": len(f.connections),
                                               "paused": [p.flow.paused for p in f.connections], **f.counters})
            if t.startswith(b"/anon"):
                return Forward(config.default_route, account=None)
            return fwd

    gw_factory: list[Any] = []
    if os.environ.get("CERTGATE_SLOW_WRITES"):
        from proxy.http.upstream import Pool

        GatewayFactory.fast_writes = False
        Pool.fast_writes = False
    def build(cls: type[GatewayFactory]) -> GatewayFactory:
        return cls(gate=FakeGate(), identify=identify, config=config, pools=pools, clock=reactor, tunnels=tunnels)

    if spec["plain"]:
        factory: Any = build(PlainGatewayFactory)
        gw_factory.append(factory)
    else:
        pki = spec["pki"]
        cert = load_certificate(FILETYPE_PEM, open(pki["server_cert"], "rb").read())
        key = load_privatekey(FILETYPE_PEM, open(pki["server_key"], "rb").read())
        ca = load_certificate(FILETYPE_PEM, open(pki["ca"], "rb").read())
        opts = ssl.CertificateOptions(privateKey=key, certificate=cert, verify=True, caCerts=[ca],
                                      requireCertificate=True)
        gw_factory.append(build(GatewayFactory))
        factory = TLSMemoryBIOFactory(opts, False, gw_factory[0], clock=reactor)
        if os.environ.get("CERTGATE_TLS_NOBUFFER"):
            from twisted.protocols.tls import TLSMemoryBIOProtocol

            factory.protocol = TLSMemoryBIOProtocol  # one write per response already: no aggregation
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    sys.stdout.write(json.dumps({"port": address.port}) + "\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
