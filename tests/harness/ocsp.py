"""OCSP test helpers: signed responses built with cryptography, a real ``openssl ocsp`` responder
process, and a loopback server that replays fixed bytes (captured or crafted answers)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.harness.process import Logged, read_log
from tests.harness.upstream import Answer, Received, RecordingUpstream
from tests.harness.wait import free_port
from trust import issue as I
from trust import ocsp as O


def responder_cert(ca: I.Issued, cn: str = "OCSP responder", *, eku: bool = True) -> I.Issued:
    """A delegated responder certificate issued by ``ca`` (OCSP-signing EKU unless ``eku`` is False)."""
    usage = (ExtendedKeyUsageOID.OCSP_SIGNING,) if eku else (ExtendedKeyUsageOID.CLIENT_AUTH,)
    return I.issue(I.name(cn), issuer=ca, eku=usage, days=30)


def make_response(leaf: x509.Certificate, issuer: x509.Certificate, signer: I.Issued, *,
                  status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD, this_update: dt.datetime,
                  next_update: dt.datetime | None, nonce: bytes | None = None, include_signer: bool = False,
                  by_key_hash: bool = False, revocation_time: dt.datetime | None = None) -> bytes:
    """A successful, signed OCSP response DER for ``leaf`` (cryptography's builder)."""
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=leaf, issuer=issuer, algorithm=hashes.SHA1(), cert_status=status, this_update=this_update,
        next_update=next_update,
        revocation_time=(revocation_time or this_update) if status == ocsp.OCSPCertStatus.REVOKED else None,
        revocation_reason=x509.ReasonFlags.key_compromise if status == ocsp.OCSPCertStatus.REVOKED else None)
    b = b.responder_id(ocsp.OCSPResponderEncoding.HASH if by_key_hash else ocsp.OCSPResponderEncoding.NAME,
                       signer.cert)
    if include_signer:
        b = b.certificates([signer.cert])
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def flip_signature(der: bytes) -> bytes:
    """The same response with one bit of its signature flipped (the signature no longer verifies)."""
    sig = ocsp.load_der_ocsp_response(der).signature
    at = der.rindex(sig) + len(sig) // 2
    return der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1:]


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise RuntimeError("openssl is not installed (Debian package: openssl); the OCSP tests need "
                           "`openssl ocsp` as their responder")
    return path


class OpenSSLResponder:
    """``openssl ocsp -port 0`` serving ``index.txt`` for ``ca``, signing with ``signer``.

    ``signer`` defaults to the CA itself; a delegated responder certificate is included in
    every response. ``next_minutes`` sets nextUpdate (None: no nextUpdate). openssl reads
    the index once, at start: :meth:`add` every certificate first. The port is chosen at
    construction so certificates can name :attr:`url` in their AIA before the start.
    """

    def __init__(self, folder: Path, ca: I.Issued, signer: I.Issued | None = None,
                 next_minutes: int | None = 10) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = ca
        self.signer = signer or ca
        self.next_minutes = next_minutes
        self.index = self.folder / "index.txt"
        self.index.write_text("")
        self.lines: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._child: Logged | None = None
        self.port = free_port()
        self.log_path = self.folder / "openssl-ocsp.log"

    def add(self, cert: x509.Certificate, revoked_at: dt.datetime | None = None) -> None:
        """List ``cert`` in the index: valid, or revoked at ``revoked_at``."""
        exp = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        subject = "/" + "/".join(reversed(cert.subject.rfc4514_string().split(",")))
        serial = f"{cert.serial_number:X}"
        serial = ("0" + serial) if len(serial) % 2 else serial
        if revoked_at is None:
            self.lines.append(f"V\t{exp}\t\t{serial}\tunknown\t{subject}")
        else:
            self.lines.append(f"R\t{exp}\t{revoked_at.strftime('%y%m%d%H%M%SZ')},keyCompromise\t{serial}\t"
                              f"unknown\t{subject}")
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in self.lines))
        os.replace(tmp, self.index)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> "OpenSSLResponder":
        ca_path = self.folder / "ca.pem"
        ca_path.write_bytes(self.ca.cert_pem())
        signer_path, key_path = self.signer.write(self.folder, "signer")
        argv = [openssl(), "ocsp", "-index", str(self.index), "-CA", str(ca_path), "-rsigner", str(signer_path),
                "-rkey", str(key_path), "-port", str(self.port), "-ignore_err"]
        if self.next_minutes is not None:
            argv += ["-nmin", str(self.next_minutes)]
        self._child = Logged(argv, self.log_path)
        self.proc = self._child.proc
        self._child.wait_until(lambda: re.search(rf"ACCEPT \S*:{self.port}\b", self.log()) is not None, 10,
                               "openssl ocsp to listen")
        return self

    def log(self) -> str:
        return read_log(self.log_path)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (a slow responder)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(5, continue_first=True)

    def ask(self, leaf: x509.Certificate, nonce: bytes | None) -> bytes:
        """POST a request for ``leaf`` to this responder; the response DER (for capturing)."""
        body = O.build_request(leaf, self.ca.cert, nonce)
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/ocsp-request"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()


class ReplayServer:
    """A loopback HTTP server answering POST /NAME with ``answers[NAME]`` (OCSP response bytes),
    404 for a name it has no answer for; ``requests`` lists the names asked for, in order."""

    def __init__(self, answers: Mapping[str, bytes] | None = None) -> None:
        self.answers: dict[str, bytes] = dict(answers or {})
        self.upstream = RecordingUpstream(answer=self._answer)
        self.port = self.upstream.port

    @property
    def requests(self) -> list[str]:
        return [r.target.strip("/") for r in self.upstream.requests]

    def _answer(self, rec: Received) -> Answer:
        body = self.answers.get(rec.target.strip("/"))
        if body is None:
            return Answer(404, b"", reason="Not Found")
        return Answer(200, body, [("Content-Type", "application/ocsp-response")])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.upstream.close()
