"""The test PKI: a CA in a trust store, a server certificate, client certificates, on disk.

Built on :mod:`trust.issue` (the product's certificate maker for the demo PKI), so the tests
make certificates the same way ``certgate demo`` does. Every :class:`Pki` writes into its own
folder::

    folder/ca.pem                  the CA certificate
    folder/server.pem, server.key  a server certificate for localhost and 127.0.0.1
    folder/trust.d/ca.pem          the trust store ([trust] store) holding the CA
    folder/clients/NAME.pem, .key  client certificates made with :meth:`Pki.client`

It guarantees fresh keys per :class:`Pki` and nothing about validity beyond what
:mod:`trust.issue` makes: broken certificates (two CNs, NUL in the CN, expired, wrong EKU)
are made on purpose with :meth:`Pki.issue`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from trust import issue as I

CA_NAME = "certgate test CA"  # the browser suite's certificate policy selects on this issuer CN


@dataclass
class ClientCert:
    """A client certificate written to disk (``cert_path`` holds the leaf and intermediates)."""

    cn: str
    cert_path: Path
    key_path: Path
    fingerprint: str


class Pki:
    """A throwaway PKI in ``folder`` (see the module docstring for the files).

    ``key_type`` applies to the CA, the server and :meth:`client` certificates; ``clients`` are
    made at once; ``ca_name`` is the CA's CN. A rogue CA of the same name but another key makes
    certificates that must be refused (:meth:`rogue_client`).
    """

    def __init__(self, folder: Path, key_type: I.KeyType = "ec256", clients: Iterable[str] = ("alice", "bob"),
                 *, ca_name: str = CA_NAME) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key_type: I.KeyType = key_type
        self.ca_name = ca_name
        self.ca = I.ca(ca_name, key_type=key_type)
        self.ca_path = self.folder / "ca.pem"
        self.ca_path.write_bytes(self.ca.cert_pem())
        self.ca_pem = str(self.ca_path)
        self.server = I.server(self.ca, ("localhost", "127.0.0.1"), key_type=key_type)
        self.server_cert, self.server_key = self.server.write(self.folder, "server")
        self.store = self.folder / "trust.d"
        self.store.mkdir(exist_ok=True)
        (self.store / "ca.pem").write_bytes(self.ca.cert_pem())
        self._rogue_ca: I.Issued | None = None
        self._clients: dict[str, ClientCert] = {}
        for cn in clients:
            self.client(cn)

    @property
    def rogue_ca(self) -> I.Issued:
        """A CA with the trusted CA's name and another key (made on first use)."""
        if self._rogue_ca is None:
            self._rogue_ca = I.ca(self.ca_name, key_type=self.key_type)
        return self._rogue_ca

    def client(self, cn: str, issuer: I.Issued | None = None, name: str | None = None, **kw: Any) -> ClientCert:
        """A client certificate for ``cn``, written as ``clients/NAME.pem``/``.key``.

        Cached by ``name`` (default ``cn``) when made with the CA and no options, so that every
        call for "alice" presents the same certificate (sessions are bound to it); ``issuer``
        or any option of :func:`trust.issue.issue` makes (and caches) a new one.
        """
        key = name or cn
        if key in self._clients and issuer is None and not kw:
            return self._clients[key]
        c = I.client(issuer or self.ca, cn, key_type=self.key_type, **kw)
        cert_path, key_path = c.write(self.folder / "clients", key)
        cc = ClientCert(cn, cert_path, key_path, c.fingerprint)
        self._clients[key] = cc
        return cc

    def rogue_client(self, cn: str = "alice") -> ClientCert:
        """A client certificate for ``cn`` from :attr:`rogue_ca` (same CA name, other key)."""
        return self.client(cn, issuer=self.rogue_ca, name=f"rogue-{cn}")

    def issue(self, cn: str | Sequence[str] | None = "alice", issuer: I.Issued | None = None, **kw: Any) -> I.Issued:
        """A new client certificate in memory (nothing written, nothing cached): any CN, also
        the broken ones (several CNs, NUL), with any option of :func:`trust.issue.issue`."""
        return I.client(issuer or self.ca, cn, **kw)

    def expired(self, cn: str = "old") -> I.Issued:
        """A client certificate that expired a day ago (valid for 29 days before)."""
        now = I.utcnow()
        return self.issue(cn, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))

    @property
    def files(self) -> dict[str, str]:
        """Paths by role: ``ca``, ``server_cert``, ``server_key`` (what a gateway needs to listen)."""
        return {"ca": self.ca_pem, "server_cert": str(self.server_cert), "server_key": str(self.server_key)}
