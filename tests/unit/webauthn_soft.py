"""A software authenticator for unit tests: real P-256 keys, real CBOR, real signatures.

It answers the options certgate sends exactly as a browser would pass them on (JSON form),
for any ``origin`` the test names, with the flags and counter the test chooses; the browser
suite covers Chromium's own authenticator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


@dataclass
class SoftKey:
    rp_id: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    cred_id: bytes = field(default_factory=lambda: os.urandom(32))
    counter: int = 0

    def _cose(self) -> bytes:
        n = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: n.x.to_bytes(32, "big"), -3: n.y.to_bytes(32, "big")})

    def _client_data(self, kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}).encode()

    def register(self, options: dict, origin: str, *, uv: bool = True) -> str:
        """The registration credential JSON for ``options`` (attestation ``none``)."""
        cd = self._client_data("webauthn.create", options["challenge"], origin)
        auth = (hashlib.sha256(options["rp"]["id"].encode()).digest() + bytes([UP | AT | (UV if uv else 0)])
                + struct.pack(">I", self.counter) + bytes(16) + struct.pack(">H", len(self.cred_id)) + self.cred_id
                + self._cose())
        att = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth})
        return json.dumps({"id": b64u(self.cred_id), "rawId": b64u(self.cred_id), "type": "public-key",
                           "response": {"clientDataJSON": b64u(cd), "attestationObject": b64u(att)},
                           "clientExtensionResults": {}})

    def assert_(self, options: dict, origin: str, *, uv: bool = True, counter: int | None = None,
                rp_id: str | None = None) -> str:
        """An assertion for ``options`` signed with this key; the counter moves up by one unless given."""
        self.counter = self.counter + 1 if counter is None else counter
        cd = self._client_data("webauthn.get", options["challenge"], origin)
        auth = (hashlib.sha256((rp_id or self.rp_id).encode()).digest() + bytes([UP | (UV if uv else 0)])
                + struct.pack(">I", self.counter))
        sig = self.key.sign(auth + hashlib.sha256(cd).digest(), ec.ECDSA(hashes.SHA256()))
        return json.dumps({"id": b64u(self.cred_id), "rawId": b64u(self.cred_id), "type": "public-key",
                           "response": {"clientDataJSON": b64u(cd), "authenticatorData": b64u(auth),
                                        "signature": b64u(sig)}, "clientExtensionResults": {}})
