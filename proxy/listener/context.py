"""Server TLS material and hardened ``SSL.Context`` objects (no Twisted, no reload logic).

``load_server_identity`` reads the server certificate chain and key named by ``[listen]``
(plus the ``sni_certificates``) with precise errors; ``build_context`` turns one of them
into a fresh, hardened pyOpenSSL context. A context is never mutated after it was built:
pyOpenSSL >= 26.2 forbids it once a connection exists, so every reload builds new ones.

Verification is *not* done by OpenSSL: no trust anchor is loaded into the context's
store. The verify callback installed here (see :mod:`proxy.listener.verify`) asks
:mod:`trust` for the one verdict and returns it (``need``) or records it (``want``).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config

#: TLS 1.2 suites: ECDHE key exchange with an AEAD cipher only (Mozilla "intermediate" minus DHE).
TLS12_CIPHERS = (b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                 b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                 b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
#: TLS 1.3 suites (all AEAD).
TLS13_SUITES = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#: Options on every context: no TLS 1.2 tickets, no compression, no renegotiation, our cipher
#: order. TLS 1.3 tickets are stopped process-wide (``NumTickets = 0``, see proxy.listener.openssl_conf).
CONTEXT_OPTIONS = (SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE
                   | SSL.OP_NO_RENEGOTIATION)
#: OpenSSL's chain-building limit (bounds the work on pathological chains; trust enforces
#: the configured depth itself).
VERIFY_DEPTH = 20
MIN_RSA_BITS = 2048

VerifyCallback = Callable[[SSL.Connection, Any, int, int, int], bool]


class TLSConfigError(Exception):
    """The server certificate material is unusable: ``where`` (file or key) and ``reason``."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class ServerCert:
    """One server certificate chain (leaf first) with its private key, as loaded."""

    chain: tuple[x509.Certificate, ...]
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


@dataclass(frozen=True)
class ServerIdentity:
    """The default server certificate plus the SNI ones (lower-case name -> cert)."""

    default: ServerCert
    sni: Mapping[str, ServerCert]

    def files(self) -> tuple[Path, ...]:
        """Every file the identity was read from (watched for reloads)."""
        out = [self.default.cert_path, self.default.key_path]
        for sc in self.sni.values():
            out += [sc.cert_path, sc.key_path]
        return tuple(dict.fromkeys(out))


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(str(path), f"cannot read the {what}: {exc.strerror}") from None


def load_server_cert(cert_path: Path, key_path: Path) -> ServerCert:
    """Read a PEM chain (leaf first) and its unencrypted PEM key; check they belong together.

    Guarantees: at least one certificate; the key is RSA >= 2048 bits or EC; the key matches
    the leaf's public key. Does not check the chain's signatures, dates or names (an expired
    server certificate still loads; clients will refuse it).
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    data = _read(cert_path, "server certificate")
    try:
        chain = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise TLSConfigError(str(cert_path), f"not a PEM certificate chain ({exc})") from None
    if not chain:
        raise TLSConfigError(str(cert_path), "holds no PEM certificate")
    kdata = _read(key_path, "server key")
    try:
        key = serialization.load_pem_private_key(kdata, password=None)
    except TypeError:
        raise TLSConfigError(str(key_path), "the key is encrypted; certgate needs an unencrypted PEM "
                                            "key (protect it with file permissions)") from None
    except ValueError as exc:
        raise TLSConfigError(str(key_path), f"not a PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise TLSConfigError(str(key_path), f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
    elif not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TLSConfigError(str(key_path), f"{type(key).__name__.lstrip('_')} keys are not supported "
                                            "(use RSA or ECDSA)")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            != chain[0].public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise TLSConfigError(str(key_path), f"this key does not belong to the first certificate of {cert_path}")
    return ServerCert(chain, key, cert_path, key_path)


def parse_sni_entries(entries: Iterable[str], base: Path) -> list[tuple[str, Path, Path]]:
    """Parse ``[listen] sni_certificates`` values ``NAME=CERT.pem:KEY.pem``.

    Relative paths are relative to ``base``. ``NAME`` is a DNS name, or ``*.suffix`` for one
    label. Raises :class:`TLSConfigError` naming the entry and why.
    """
    out: list[tuple[str, Path, Path]] = []
    seen: set[str] = set()
    for raw in entries:
        where = f"[listen] sni_certificates entry {raw!r}"
        name, sep, files = raw.partition("=")
        cert_s, sep2, key_s = files.rpartition(":")
        name = name.strip().lower().rstrip(".")
        if not sep or not sep2 or not name or not cert_s.strip() or not key_s.strip():
            raise TLSConfigError(where, "expected NAME=CERT.pem:KEY.pem")
        label_part = name[2:] if name.startswith("*.") else name
        if not label_part or not all(c.isalnum() or c in "-." for c in label_part) or not label_part.isascii():
            raise TLSConfigError(where, f"{name!r} is not a DNS name (or *.suffix)")
        if name in seen:
            raise TLSConfigError(where, f"{name!r} is listed twice")
        seen.add(name)
        cp, kp = Path(cert_s.strip()), Path(key_s.strip())
        out.append((name, cp if cp.is_absolute() else base / cp, kp if kp.is_absolute() else base / kp))
    return out


def load_server_identity(config: Config) -> ServerIdentity:
    """Load ``[listen] certificate``/``key`` and every ``sni_certificates`` entry of ``config``.

    Raises :class:`TLSConfigError` (file and reason) for the first unusable one.
    """
    listen = config.listen
    if listen.certificate is None or listen.key is None:
        raise TLSConfigError("[listen] certificate/key", "both are required")
    default = load_server_cert(listen.certificate, listen.key)
    sni: dict[str, ServerCert] = {}
    for name, cp, kp in parse_sni_entries(listen.sni_certificates, config.base_dir):
        sni[name] = load_server_cert(cp, kp)
    return ServerIdentity(default, sni)


def server_cert_warnings(identity: ServerIdentity, now: _dt.datetime) -> list[str]:
    """Operator warnings (expired / not yet valid server certificates); never refuses."""
    out = []
    for sc in (identity.default, *identity.sni.values()):
        leaf = sc.leaf
        if leaf.not_valid_after_utc < now:
            out.append(f"{sc.cert_path}: server certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
        elif leaf.not_valid_before_utc > now:
            out.append(f"{sc.cert_path}: server certificate is not valid before "
                       f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
    return out


def file_stats(paths: Iterable[Path]) -> tuple[tuple[str, int, int, int], ...]:
    """(path, size, mtime_ns, inode) per file; -1s for a missing one. A few ``stat`` calls."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((str(p), -1, -1, -1))
    return tuple(out)


def build_context(server: ServerCert, *, client_auth: str, client_cas: Sequence[x509.Certificate],
                  min_version: str, verify_callback: VerifyCallback | None, session_id: bytes,
                  servername_callback: Callable[[SSL.Connection], None] | None = None) -> SSL.Context:
    """A new hardened server context for ``server``.

    TLS 1.2+ (or 1.3 only), AEAD suites, server preference, no renegotiation, no TLS 1.2
    tickets (TLS 1.3 ones: :mod:`proxy.listener.openssl_conf`), session cache off, no compression; ``client_auth`` ``need`` sets VERIFY_PEER +
    FAIL_IF_NO_PEER_CERT, ``want`` VERIFY_PEER, ``none`` VERIFY_NONE. ``client_cas`` go into
    the CertificateRequest's CA list (not into a trust store: ``verify_callback`` decides).
    """
    if client_auth not in ("need", "want", "none"):
        raise ValueError(f"client_auth {client_auth!r} is not need, want or none")
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION if min_version == "1.3" else SSL.TLS1_2_VERSION)
    ctx.set_options(CONTEXT_OPTIONS)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(TLS12_CIPHERS)
    ctx.set_tls13_ciphersuites(TLS13_SUITES)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_session_id(session_id)
    ctx.use_certificate(server.leaf)
    for extra in server.chain[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(server.key)
    ctx.check_privatekey()
    if client_auth == "none":
        ctx.set_verify(SSL.VERIFY_NONE)
    else:
        for ca in client_cas:
            ctx.add_client_ca(ca)
        mode = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
        if client_auth == "need":
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        if verify_callback is None:
            raise ValueError("client_auth need/want requires a verify callback (trust decides, not OpenSSL)")
        ctx.set_verify(mode, verify_callback)
        _install_alert_shim(ctx, mode, verify_callback)
        ctx.set_verify_depth(VERIFY_DEPTH)
    if servername_callback is not None:
        ctx.set_tlsext_servername_callback(servername_callback)
    return ctx


def _install_alert_shim(ctx: SSL.Context, mode: int, callback: Any) -> bool:
    """Let a refusal carry a precise X509 error code, so the TLS alert says why.

    pyOpenSSL's verify wrapper cannot set the error of the X509_STORE_CTX, so a refusal
    would reach the client as ``internal_error`` (browsers then show a protocol error and
    keep the rejected certificate selected). This wraps pyOpenSSL's C callback: after it
    returns 0, the error becomes ``callback.refusal_error_of(connection)`` (e.g. ``unknown_ca``,
    ``certificate_expired``): the refusal of *this* connection, kept on its own record. It
    touches pyOpenSSL internals (``Context._context``, ``Context._verify_callback``,
    ``Connection._reverse_mapping``); if they change, it does nothing and the generic alert
    is sent (the decision itself is unaffected). Returns whether it was installed.
    """
    try:
        from OpenSSL._util import ffi, lib

        # pyOpenSSL annotates _verify_callback as the Python-level callback, but it holds the cffi
        # C callback made from it (SSL.py: self._verify_callback = self._verify_helper.callback)
        inner = cast("Callable[[int, Any], int] | None", ctx._verify_callback)
        raw = ctx._context
        set_error = lib.X509_STORE_CTX_set_error
        set_verify = lib.SSL_CTX_set_verify
        get_ex_data = lib.X509_STORE_CTX_get_ex_data
        ssl_index = lib.SSL_get_ex_data_X509_STORE_CTX_idx
        connections = SSL.Connection._reverse_mapping
        refusal_error_of = callback.refusal_error_of
    except (ImportError, AttributeError):  # pragma: no cover - pyOpenSSL internals changed
        return False
    if inner is None:
        return False

    def outer(ok: int, store_ctx: Any) -> int:
        result = inner(ok, store_ctx)
        if not result:
            conn = connections.get(get_ex_data(store_ctx, ssl_index()))
            code = refusal_error_of(conn) if conn is not None else None
            if code:
                set_error(store_ctx, code)
        return result

    shim = ffi.callback("int (*)(int, X509_STORE_CTX *)", outer)
    ctx._certgate_verify_shim = shim  # type: ignore[attr-defined]  # keep it alive with the context
    set_verify(raw, mode, shim)
    return True
