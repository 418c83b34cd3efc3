"""The client certificate of one handshake, as one value: :class:`PresentedCertificate`.

The TLS layer makes it once, in the handshake, from the DER OpenSSL received (the leaf and
the chain above it, as presented); everything after that — the verdict cache, the mapping,
OCSP, the directory lookup, the connection's identity and the trusted sessions — reads this
value and never parses or re-encodes the certificate again.

The leaf is parsed once, on first use (:meth:`PresentedCertificate.parse` does it at once);
a DER that does not parse is kept with its error, so a refusal can still name its fingerprint.
The intermediates are parsed only when a verdict must be computed (a verdict cache miss).

Connections that present the same leaf and chain while one of them is open share one value
(:meth:`PresentedCertificate.shared`, interned weakly by :attr:`~PresentedCertificate.cache_key`):
a browser's parallel connections hold one DER copy and one parsed leaf, not one each.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable

from cryptography import x509

from . import certinfo


@dataclass(frozen=True, eq=False)
class PresentedCertificate:
    """A client certificate as presented in one TLS handshake.

    ``der`` is the leaf's DER; ``chain_der`` the certificates the client sent above it,
    nearest first, with any repetition of the leaf left out. ``fingerprint`` is the
    lower-case hex SHA-256 of ``der``; ``cache_key`` a SHA-256 over the leaf and the chain
    (the verdict cache's key). Nothing here checks trust: see :func:`trust.verify.verify`.
    """

    der: bytes
    chain_der: tuple[bytes, ...] = ()
    fingerprint: str = field(init=False)
    cache_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        chain = tuple(c for c in self.chain_der if c != self.der)
        h = hashlib.sha256(self.der)
        fingerprint = h.hexdigest()
        if chain:
            for c in chain:
                h.update(len(c).to_bytes(4, "big"))
                h.update(c)
        object.__setattr__(self, "chain_der", chain)
        object.__setattr__(self, "fingerprint", fingerprint)
        object.__setattr__(self, "cache_key", h.digest())

    @classmethod
    def parse(cls, der: bytes, chain_der: Iterable[bytes] = ()) -> "PresentedCertificate":
        """The value with its leaf parsed now; raises ValueError when the DER does not parse."""
        cert = cls(der, tuple(chain_der))
        cert.leaf  # noqa: B018 (the one parse)
        return cert

    @classmethod
    def received(cls, der: bytes, chain_der: Iterable[bytes] = ()) -> "PresentedCertificate":
        """The value made in the handshake: the leaf is parsed now; a DER that does not parse
        is kept with :attr:`parse_error` set (never raises)."""
        cert = cls(der, tuple(chain_der))
        cert._parsed  # noqa: B018 (the one parse)
        return cert

    @classmethod
    def shared(cls, der: bytes, chain_der: Iterable[bytes] = ()) -> "PresentedCertificate":
        """:meth:`received`, shared: while a value for the same leaf and chain (same bytes, not
        only the same digest) is alive anywhere, that one is returned and nothing is parsed.

        The value is immutable, so sharing it changes nothing a connection can observe; the
        table holds it weakly (it vanishes with the last connection or session using it).
        """
        cert = cls(der, tuple(chain_der))
        hit = _SHARED.get(cert.cache_key)
        if hit is not None and hit.der == cert.der and hit.chain_der == cert.chain_der:
            return hit
        cert._parsed  # noqa: B018 (the one parse)
        _SHARED[cert.cache_key] = cert
        return cert

    # -- the parsed leaf (once)
    @cached_property
    def _parsed(self) -> x509.Certificate | str:
        try:
            return x509.load_der_x509_certificate(self.der)
        except ValueError as exc:
            return str(exc) or "undecodable DER"

    @property
    def leaf(self) -> x509.Certificate:
        """The parsed leaf; raises ValueError when its DER does not parse."""
        parsed = self._parsed
        if isinstance(parsed, str):
            raise ValueError(parsed)
        return parsed

    @property
    def parsed_leaf(self) -> x509.Certificate | None:
        """The parsed leaf, or None when its DER does not parse."""
        parsed = self._parsed
        return None if isinstance(parsed, str) else parsed

    @property
    def parse_error(self) -> str | None:
        """Why the leaf's DER does not parse, or None."""
        parsed = self._parsed
        return parsed if isinstance(parsed, str) else None

    @cached_property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """The chain certificates, parsed (only a verdict computation needs them); raises ValueError."""
        return tuple(x509.load_der_x509_certificate(c) for c in self.chain_der)

    # -- facts of the leaf, read once
    @cached_property
    def not_before(self) -> _dt.datetime | None:
        """The leaf's notBefore (aware, UTC); None when the leaf does not parse."""
        leaf = self.parsed_leaf
        return certinfo.not_before(leaf) if leaf is not None else None

    @cached_property
    def not_after(self) -> _dt.datetime | None:
        """The leaf's notAfter (aware, UTC); None when the leaf does not parse."""
        leaf = self.parsed_leaf
        return certinfo.not_after(leaf) if leaf is not None else None

    @cached_property
    def not_after_ts(self) -> float | None:
        """:attr:`not_after` as epoch seconds (None when the leaf does not parse)."""
        na = self.not_after
        return na.timestamp() if na is not None else None

    @cached_property
    def subject(self) -> str:
        """The leaf's RFC 4514 subject ("" when the leaf does not parse); not escaped."""
        leaf = self.parsed_leaf
        return certinfo.subject_text(leaf.subject) if leaf is not None else ""

    @cached_property
    def common_name(self) -> str | None:
        """The subject's CN when there is exactly one (not checked for printability), else None."""
        leaf = self.parsed_leaf
        cns = certinfo.cn_values(leaf.subject) if leaf is not None else []
        return cns[0] if len(cns) == 1 else None


#: cache_key -> the live value presented with that leaf and chain (see PresentedCertificate.shared)
_SHARED: "weakref.WeakValueDictionary[bytes, PresentedCertificate]" = weakref.WeakValueDictionary()
