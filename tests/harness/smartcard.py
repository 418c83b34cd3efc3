"""A software smart card for Chromium: a SoftHSM2 token holding a client key and certificate,
registered as a PKCS#11 module in a private NSS database ($HOME/.pki/nssdb of one browser).

The token is written PIN-less, as headless Chromium cannot answer NSS's PIN prompt: the key
and certificate are non-private objects (``p11tool --no-mark-private``), a public-key object
carries the same id (without it NSS lists the certificate without trust flags and Chromium
offers none), and the module is added with ``-mechanisms FRIENDLY``. A real card would ask
for its PIN; that is the one difference, on purpose.

:meth:`SmartCard.pull` deletes the token while the browser runs: Chromium (NSS) notices, a
new TLS connection can no longer be signed, and the browser retries without a certificate.
Connections opened before the pull keep their identity until the server closes them.

Every program is checked first: a missing one is a RuntimeError naming its Debian package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography import x509

SOFTHSM_LIBS = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
TOOLS = {"softhsm2-util": "softhsm2", "p11tool": "gnutls-bin", "pkcs11-tool": "opensc",
         "certutil": "libnss3-tools", "modutil": "libnss3-tools"}
SO_PIN, PIN = "12345678", "1234"


def softhsm_lib() -> str:
    for p in SOFTHSM_LIBS:
        if os.path.exists(p):
            return p
    raise RuntimeError("libsofthsm2.so not found (apt-get install softhsm2); the browser suite needs it")


def check_tools() -> None:
    """RuntimeError naming the Debian package of the first missing program."""
    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install {pkg}); the browser suite needs it")
    softhsm_lib()


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, stdin: bytes | None = None) -> str:
    """Run a setup command; AssertionError with its output when it fails."""
    p = subprocess.run(list(argv), input=stdin, capture_output=True, env=dict(os.environ, **(env or {})),
                       timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout.decode(errors='replace')}"
                             f"{p.stderr.decode(errors='replace')}")
    return p.stdout.decode(errors="replace")


class SmartCard:
    """One browser's card reader and NSS database, under ``home``.

    ``env`` is what the browser process needs (``HOME``, ``SOFTHSM2_CONF``).
    """

    def __init__(self, home: Path) -> None:
        check_tools()
        self.home = Path(home)
        self.tokendir = self.home / "softhsm-tokens"
        self.conf = self.home / "softhsm2.conf"
        self.nssdb = self.home / ".pki" / "nssdb"
        self.label = "card1"
        self.inserted = False

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "SOFTHSM2_CONF": str(self.conf)}

    def setup(self, ca_pem: Path, cert: Path | None, key: Path | None) -> "SmartCard":
        """Trust ``ca_pem`` for servers in the NSS database; with ``cert``/``key`` also put them
        on a fresh token and register the token's module."""
        self.tokendir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"directories.tokendir = {self.tokendir}\nobjectstore.backend = file\n"
                             "log.level = ERROR\nslots.removable = true\n")
        self.nssdb.mkdir(parents=True, exist_ok=True)
        db = f"sql:{self.nssdb}"
        run(["certutil", "-N", "-d", db, "--empty-password"], self.env)
        run(["certutil", "-A", "-d", db, "-n", "certgate test CA", "-t", "C,,", "-i", str(ca_pem)], self.env)
        if cert is not None and key is not None:
            self.insert(cert, key)
            run(["modutil", "-force", "-dbdir", db, "-add", "softcard", "-libfile", softhsm_lib(),
                 "-mechanisms", "FRIENDLY"], self.env)
        return self

    def insert(self, cert: Path, key: Path) -> None:
        """Write ``key`` + ``cert`` (+ the public key, same id) as non-private objects on a new token."""
        lib = softhsm_lib()
        run(["softhsm2-util", "--init-token", "--free", "--label", self.label, "--so-pin", SO_PIN, "--pin", PIN],
            self.env)
        run(["p11tool", "--provider", lib, "--login", "--write", f"pkcs11:token={self.label}",
             "--load-privkey", str(key), "--load-certificate", str(cert), "--id", "01", "--label", "client",
             "--no-mark-private"], dict(self.env, GNUTLS_PIN=PIN))
        pub = x509.load_pem_x509_certificate(Path(cert).read_bytes()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        pub_path = self.home / "client-pub.der"
        pub_path.write_bytes(pub)
        run(["pkcs11-tool", "--module", lib, "--token-label", self.label, "--login", "--pin", PIN,
             "--write-object", str(pub_path), "--type", "pubkey", "--id", "01", "--label", "client"], self.env)
        self.inserted = True

    def objects(self) -> str:
        """The token's objects as pkcs11-tool lists them (for failure messages)."""
        return run(["pkcs11-tool", "--module", softhsm_lib(), "--token-label", self.label, "--list-objects"],
                   self.env)

    def pull(self) -> None:
        """Remove the card: the token is deleted while the browser runs."""
        run(["softhsm2-util", "--delete-token", "--token", self.label], self.env)
        self.inserted = False
