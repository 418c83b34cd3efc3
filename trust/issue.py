"""Issue X.509 certificates with cryptography's builders: demo PKIs, tests, benchmarks.

Nothing here decides trust; it only *makes* certificates, including deliberately
broken ones (two CNs, NUL in the CN, CA:TRUE leaves, wrong usages, expired) so
tests can show that :mod:`trust.verify` refuses them.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

KeyType = Literal["ec256", "ec384", "rsa2048", "rsa1024", "rsa3072", "ed25519"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

#: Microsoft User Principal Name otherName (AD / FreeIPA smart cards).
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")

#: How far new certificates and CRLs are backdated by default: clock skew, and test modules
#: that fix "now" when they are collected (a long suite reaches them minutes later).
_EPOCH_SLACK = _dt.timedelta(hours=1)


def utcnow() -> _dt.datetime:
    """The current time as an aware UTC datetime."""
    return _dt.datetime.now(_dt.timezone.utc)


def new_key(kind: KeyType = "ec256") -> PrivateKey:
    """A fresh private key of the given kind."""
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    bits = {"rsa2048": 2048, "rsa1024": 1024, "rsa3072": 3072}[kind]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def name(cn: str | Sequence[str] | None = None, **extra: str) -> x509.Name:
    """Build a subject name; ``cn`` may be a list to make (bad) multi-CN names.

    ``extra`` takes ``o``, ``ou``, ``c`` and ``email``.
    """
    attrs: list[x509.NameAttribute[str]] = []
    oids = {"c": NameOID.COUNTRY_NAME, "o": NameOID.ORGANIZATION_NAME,
            "ou": NameOID.ORGANIZATIONAL_UNIT_NAME, "email": NameOID.EMAIL_ADDRESS}
    for k in ("c", "o", "ou"):
        if k in extra:
            attrs.append(x509.NameAttribute(oids[k], extra[k]))
    cns = [] if cn is None else ([cn] if isinstance(cn, str) else list(cn))
    for value in cns:
        # _validate=False lets tests build NUL/overlong CNs on purpose.
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, value, _validate=False))
    if "email" in extra:
        attrs.append(x509.NameAttribute(oids["email"], extra["email"]))
    return x509.Name(attrs)


@dataclass
class Issued:
    """A certificate with its private key and the chain above it (issuer first)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """Lower-case hex SHA-256 of the DER certificate."""
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self) -> bytes:
        """Leaf followed by its intermediates (not the root), as PEM."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [self.cert, *self.chain])

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def p12(self, password: bytes | None, friendly_name: bytes | None = None) -> bytes:
        """PKCS#12 with key, certificate and chain; ``None`` password means unencrypted."""
        enc = (serialization.BestAvailableEncryption(password) if password
               else serialization.NoEncryption())
        return pkcs12.serialize_key_and_certificates(friendly_name or b"certgate", self.key, self.cert,
                                                     self.chain or None, enc)

    def write(self, folder: str | Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.pem`` (leaf + intermediates) and ``stem.key``; returns both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert_path.write_bytes(self.chain_pem())
        key_path.write_bytes(self.key_pem())
        key_path.chmod(0o600)
        return cert_path, key_path


def issue(
    subject: x509.Name | str,
    *,
    issuer: Issued | None = None,
    key: PrivateKey | None = None,
    key_type: KeyType = "ec256",
    ca: bool = False,
    path_length: int | None = None,
    eku: Sequence[ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    eku_critical: bool = False,
    key_usage: bool = True,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    days: int = 365,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    emails: Sequence[str] = (),
    upns: Sequence[str] = (),
    serial: int | None = None,
    ski_aki: bool = True,
) -> Issued:
    """Issue one certificate; self-signed when ``issuer`` is None.

    Defaults make a client-auth leaf (EKU clientAuth, CA:FALSE). ``eku=None`` omits
    the EKU extension. Nothing is validated: broken certificates are the point.
    """
    subj = name(subject) if isinstance(subject, str) else subject
    key = key or new_key(key_type)
    now = utcnow()
    nb = not_before or (now - _EPOCH_SLACK)
    na = not_after or (nb + _dt.timedelta(days=days))
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else subj
    b = (x509.CertificateBuilder()
         .subject_name(subj).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True))
    if key_usage:
        if ca:
            ku = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                               data_encipherment=False, key_agreement=False, key_cert_sign=True,
                               crl_sign=True, encipher_only=False, decipher_only=False)
        else:
            ku = x509.KeyUsage(digital_signature=True, content_commitment=False,
                               key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
                               key_agreement=False, key_cert_sign=False, crl_sign=False,
                               encipher_only=False, decipher_only=False)
        b = b.add_extension(ku, critical=True)
    if eku is not None and not ca:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    elif eku is not None and ca and eku != (ExtendedKeyUsageOID.CLIENT_AUTH,):
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.RFC822Name(e) for e in emails]
    sans += [x509.OtherName(UPN_OID, _der_utf8(u)) for u in upns]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ski_aki:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        if issuer is not None:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        else:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    cert = b.sign(signer_key, _hash_for(signer_key))
    chain = ([issuer.cert, *issuer.chain] if issuer else [])
    # The chain handed to peers stops below the root: drop self-signed tops.
    chain = [c for c in chain if c.subject != c.issuer]
    return Issued(cert, key, chain)


def _der_utf8(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) < 128:
        return b"\x0c" + bytes([len(raw)]) + raw
    ln = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return b"\x0c" + bytes([0x80 | len(ln)]) + ln + raw


def ca(cn: str = "certgate test CA", *, key_type: KeyType = "ec256", issuer: Issued | None = None,
       days: int = 3650, **kw: object) -> Issued:
    """A CA certificate (root when ``issuer`` is None, intermediate otherwise)."""
    return issue(name(cn, o="certgate"), issuer=issuer, key_type=key_type, ca=True, days=days,
                 **kw)  # type: ignore[arg-type]


def server(issuer: Issued, hosts: Sequence[str] = ("localhost", "127.0.0.1"), *,
           key_type: KeyType = "ec256", days: int = 825) -> Issued:
    """A TLS server certificate for ``hosts`` (DNS names and IP addresses)."""
    dns = [h for h in hosts if not _is_ip(h)]
    ips = [h for h in hosts if _is_ip(h)]
    return issue(name(hosts[0]), issuer=issuer, key_type=key_type, dns=dns, ips=ips, days=days,
                 eku=(ExtendedKeyUsageOID.SERVER_AUTH,))


def client(issuer: Issued | None, cn: str | Sequence[str] | None, **kw: object) -> Issued:
    """A client-auth certificate with the given CN(s); see :func:`issue` for options."""
    return issue(name(cn), issuer=issuer, **kw)  # type: ignore[arg-type]


def crl(issuer: Issued, revoked_serials: Sequence[int] = (), *, last_update: _dt.datetime | None = None,
        next_update: _dt.datetime | None = None, days: int = 7, signer: Issued | None = None
        ) -> x509.CertificateRevocationList:
    """A CRL from ``issuer`` (signed by ``signer`` if given, to make bad CRLs)."""
    lu = last_update or (utcnow() - _EPOCH_SLACK)
    nu = next_update or (lu + _dt.timedelta(days=days))
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(lu).next_update(nu))
    for s in revoked_serials:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(s).revocation_date(lu).build())
    sk = (signer or issuer).key
    return b.sign(sk, _hash_for(sk))


def pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """PEM encoding of a certificate or CRL."""
    return obj.public_bytes(serialization.Encoding.PEM)


def der(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """DER encoding of a certificate or CRL."""
    return obj.public_bytes(serialization.Encoding.DER)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
