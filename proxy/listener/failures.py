"""Why a TLS handshake failed, as a stable code: counted, and summed into the audit's refusal digest.

The refusals of certgate's own verify callback are audited there with their precise reason;
this module names the other endings (timeout, no certificate, TLS version, not TLS, a probe).
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL

from proxy.listener.verify import RECORDS


def handshake_failure_reason(transport: Any, reason: Any, timed_out: bool) -> str:
    """A stable code for a connection that ended before its TLS handshake completed.

    ``certificate-refused`` when certgate's verify callback refused the certificate (that
    refusal is audited with its precise reason already); ``handshake-timeout``;
    ``no-certificate``; ``tls-version``; ``not-tls``; ``tls-error``; ``closed`` when the
    client went away without a TLS error (e.g. a port probe).
    """
    conn = getattr(transport, "_tlsConnection", None)
    rec = RECORDS.get(conn) if conn is not None else None
    if rec is not None and rec.decision is False:
        return "certificate-refused"
    if timed_out:
        return "handshake-timeout"
    err = getattr(reason, "value", None)
    if not isinstance(err, SSL.Error):
        return "closed"
    text = str(err).lower()
    if "did not return a certificate" in text or "certificate required" in text:
        return "no-certificate"
    if "unsupported protocol" in text or "no protocols available" in text or "version too low" in text:
        return "tls-version"
    if "wrong version number" in text or "http request" in text:
        return "not-tls"
    return "tls-error"


class HandshakeFailures:
    """The GatewayFactory's ``handshake_failed`` hook: a counter by reason, and refusals to the audit digest.

    ``certificate-refused`` is audited by the verify callback and ``closed`` is no refusal,
    so neither reaches the digest again.
    """

    def __init__(self, metrics: Any, refusals: Any) -> None:
        self._count = metrics.counter("tls_handshakes_failed_total",
                                      "Connections that ended before their TLS handshake completed, by reason",
                                      ("reason",))
        self._refusals = refusals

    def __call__(self, transport: Any, reason: Any, timed_out: bool) -> None:
        code = handshake_failure_reason(transport, reason, timed_out)
        self._count.labels(code).inc()
        if code not in ("certificate-refused", "closed") and self._refusals is not None:
            try:
                ip = transport.getPeer().host
            except Exception:
                ip = "?"
            self._refusals.add(ip, code)
