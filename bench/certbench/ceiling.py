"""The crypto ceiling: full mTLS handshakes per second per core that the public-key
work alone would allow.

Server-side public-key work per full TLS 1.3 handshake with client authentication
(X25519 key exchange, what every client here negotiates):

    t_full = 2 * t_x25519 (keygen, counted as one derive, + derive)
           + t_sign       (server CertificateVerify)
           + 2 * t_verify (CA signature on the client certificate, client CertificateVerify)
    ceiling = 1 / t_full

Hashing, HKDF and AES-GCM (~10-20 µs) are left out, so this is an upper bound.
Measured with ``openssl speed`` (the system OpenSSL, which nginx links) and through
``cryptography`` (the OpenSSL in the wheel, which pyOpenSSL and so certgate use).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Any, Callable

from .procs import pinned

OPS = ("ecdsa_sign", "ecdsa_verify", "rsa_sign", "rsa_verify", "x25519_derive")


def parse_speed(out: str) -> dict[str, float]:
    """Operations per second from ``openssl speed ecdsap256 rsa2048 ecdhx25519`` output."""
    r: dict[str, float] = {}
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)", out)
    if m:
        r["ecdsa_sign"], r["ecdsa_verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"rsa 2048 bits\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)", out)
    if m:
        r["rsa_sign"], r["rsa_verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"253 bits ecdh \(X25519\)\s+[\d.]+s\s+([\d.]+)", out)
    if m:
        r["x25519_derive"] = float(m.group(1))
    return r


def system_speed(seconds: int, cpus: str | None) -> dict[str, float]:
    argv = ["openssl", "speed", "-seconds", str(seconds), "ecdsap256", "rsa2048", "ecdhx25519"]
    p = subprocess.run(pinned(cpus, argv), capture_output=True, text=True, timeout=20 * seconds + 30)
    return parse_speed(p.stdout + p.stderr)


def wheel_speed(seconds: float) -> dict[str, float]:
    """The same primitives through ``cryptography`` (includes ~10 µs of Python per call)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519

    data = os.urandom(64)

    def rate(fn: Callable[[], Any]) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                fn()
            n += 10
        return n / (time.perf_counter() - t0)

    ek = ec.generate_private_key(ec.SECP256R1())
    esig = ek.sign(data, ec.ECDSA(hashes.SHA256()))
    rk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    rsig = rk.sign(data, pss, hashes.SHA256())
    xa, xb = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate().public_key()
    return {
        "ecdsa_sign": rate(lambda: ek.sign(data, ec.ECDSA(hashes.SHA256()))),
        "ecdsa_verify": rate(lambda: ek.public_key().verify(esig, data, ec.ECDSA(hashes.SHA256()))),
        "rsa_sign": rate(lambda: rk.sign(data, pss, hashes.SHA256())),
        "rsa_verify": rate(lambda: rk.public_key().verify(rsig, data, pss, hashes.SHA256())),
        "x25519_derive": rate(lambda: xa.exchange(xb)),
    }


def ceilings(ops: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per flavour: µs of public-key work per full handshake and the implied handshakes/s."""
    us = {k: 1e6 / v for k, v in ops.items() if v}
    out = {}
    for flavour, sign, verify in (("ec", "ecdsa_sign", "ecdsa_verify"), ("rsa", "rsa_sign", "rsa_verify")):
        if {"x25519_derive", sign, verify} <= us.keys():
            t = 2 * us["x25519_derive"] + us[sign] + 2 * us[verify]
            out[flavour] = {"us_per_hs": round(t, 1), "hs_per_s": round(1e6 / t, 0)}
    return out


def measure(seconds: int, cpus: str | None) -> dict[str, Any]:
    """Primitive rates and ceilings for the system OpenSSL and the wheel's OpenSSL."""
    from cryptography.hazmat.backends.openssl import backend

    sysver = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    sys_ops = system_speed(seconds, cpus)
    wheel_ops = wheel_speed(min(seconds, 2))
    return {
        "system": {"library": sysver, "ops_per_s": sys_ops, "ceiling": ceilings(sys_ops)},
        "wheel": {"library": backend.openssl_version_text(), "ops_per_s": wheel_ops,
                  "ceiling": ceilings(wheel_ops)},
    }
