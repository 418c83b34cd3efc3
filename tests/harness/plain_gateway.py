"""The HTTP engine over plain TCP, for tests and profiling only (the service always listens with TLS).

:class:`PlainGatewayFactory` builds connections that are identified at connect time
(``identify(transport, now)`` right away) instead of after a TLS handshake.
"""

from __future__ import annotations

from typing import Any

from proxy.http.connection import GatewayProtocol
from proxy.http.factory import GatewayFactory


class PlainGatewayProtocol(GatewayProtocol):
    """A connection with no handshake to wait for: identified as soon as it is made."""

    __slots__ = ()

    def await_handshake(self) -> None:
        self.handshakeCompleted()


class PlainGatewayFactory(GatewayFactory):
    """The same HTTP layer over plain TCP."""

    protocol = PlainGatewayProtocol

    def buildProtocol(self, addr: Any) -> PlainGatewayProtocol:
        return PlainGatewayProtocol(self)
