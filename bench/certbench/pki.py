"""The benchmark PKIs, made with the project's own certificate builder (trust/issue.py).

For each flavour ("ec": ECDSA P-256 everywhere, "rsa": RSA-2048 everywhere) the folder
holds ca.pem, server.pem + server.key (SAN localhost, 127.0.0.1; serverAuth),
client.pem + client.key (CN=alice; clientAuth) and trust.d/ca.pem (certgate's store).
"""

from __future__ import annotations

from pathlib import Path

FLAVOURS = {"ec": ("ec256", "ECDSA P-256"), "rsa": ("rsa2048", "RSA-2048")}


def make_pki(folder: Path, flavour: str) -> Path:
    """Write a fresh CA, server and client certificate of ``flavour`` into ``folder``/``flavour``."""
    from trust import issue  # the repository root is on sys.path (see __main__)

    key_type = FLAVOURS[flavour][0]
    d = folder / flavour
    d.mkdir(parents=True, exist_ok=True)
    root = issue.ca(f"certgate bench CA ({flavour})", key_type=key_type, days=30)  # type: ignore[arg-type]
    (d / "ca.pem").write_bytes(root.cert_pem())
    (d / "trust.d").mkdir(exist_ok=True)
    (d / "trust.d" / "ca.pem").write_bytes(root.cert_pem())
    issue.server(root, ("localhost", "127.0.0.1"), key_type=key_type, days=30).write(d, "server")  # type: ignore[arg-type]
    issue.client(root, "alice", key_type=key_type, days=30).write(d, "client")
    return d
