"""The frozen per-connection identity, fixed once at TLS handshake completion.

Everything after the handshake (gate, sessions, forwarding headers) reads this value and
never the OpenSSL objects, so every decision comes from one ``trust`` verdict; the client
certificate is the one :class:`~trust.presented.PresentedCertificate` made in the handshake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509

    from trust.presented import PresentedCertificate
    from trust.verify import Verdict


@dataclass(frozen=True, slots=True)
class ConnectionIdentity:
    """What one TLS connection proved.

    ``presented`` is True when the client sent a certificate in this handshake (a full
    one: resumption is disabled, and ``full_handshake`` records it anyway).
    ``verdict`` is the trust verdict (None when nothing was presented or client auth is
    ``none``). ``account`` is set only when the verdict is ok *and* the mapping produced
    an account; ``mapping_error`` says why not otherwise. ``certificate`` is the presented
    certificate (None when none was presented): its DER, chain, parsed leaf and fingerprint.
    """

    presented: bool
    verdict: "Verdict | None"
    account: str | None
    mapping_error: str | None
    handshake_at: float
    full_handshake: bool
    protocol: str
    cipher: str
    client_ip: str
    client_port: int
    server_name: str | None = None
    certificate: "PresentedCertificate | None" = None

    @property
    def leaf(self) -> "x509.Certificate | None":
        """The presented leaf, parsed (in the handshake); None when none was presented or its
        DER does not parse."""
        return self.certificate.parsed_leaf if self.certificate is not None else None

    @property
    def leaf_der(self) -> bytes:
        """The presented leaf's DER (empty when none was presented)."""
        return self.certificate.der if self.certificate is not None else b""

    @property
    def chain_der(self) -> tuple[bytes, ...]:
        """The intermediates the client sent, leaf excluded (DER, nearest first)."""
        return self.certificate.chain_der if self.certificate is not None else ()

    @property
    def ok(self) -> bool:
        """A valid certificate that maps to an account was presented in this handshake."""
        return self.verdict is not None and self.verdict.ok and self.account is not None

    @property
    def fingerprint(self) -> str | None:
        """Lower-case hex SHA-256 of the presented leaf, valid or not."""
        return self.verdict.fingerprint if self.verdict is not None else None

    @property
    def subject(self) -> str | None:
        return self.verdict.subject if self.verdict is not None else None

    @property
    def issuer(self) -> str | None:
        return self.verdict.issuer if self.verdict is not None else None

    @property
    def invalid_reason(self) -> str | None:
        """Why a *presented* certificate was refused (None if none presented or ok)."""
        if not self.presented or self.verdict is None:
            return None
        if not self.verdict.ok:
            return self.verdict.summary
        return self.mapping_error


def anonymous(client_ip: str, client_port: int, now: float, protocol: str = "", cipher: str = "",
              full_handshake: bool = True) -> ConnectionIdentity:
    """The identity of a connection that presented no certificate."""
    return ConnectionIdentity(presented=False, verdict=None, account=None, mapping_error=None,
                              handshake_at=now, full_handshake=full_handshake, protocol=protocol,
                              cipher=cipher, client_ip=client_ip, client_port=client_port)
