"""Sessions through a real gateway: a config with password login, logging in, requests with
the session cookie.

:func:`session_config` writes (with :func:`tests.harness.config.write_config`) a config whose
login needs the certificate and a password, and the password file for ``alice`` and ``bob``
(:data:`PASSWORD`, set as ``certgate passwd`` does). :func:`login` asserts the login succeeds
and returns the cookie; it checks nothing about the session beyond that one cookie.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Mapping

from proxy.login.passwords import set_password
from tests.harness.client import request
from tests.harness.config import overlay, write_config
from tests.harness.pki import Pki

PASSWORD = "correct horse battery staple"


def session_config(tmp: Path, pki: Pki, upstream_url: str, *, store: str, sessions: Mapping[str, object] | None = None,
                   extra: Mapping[str, Mapping[str, object]] | None = None, name: str = "gw") -> Path:
    """A gateway config in ``tmp/name`` with password login (file) and ``[sessions] store``.

    Writes the password file for ``alice`` and ``bob``.
    """
    folder = Path(tmp) / name
    folder.mkdir(parents=True, exist_ok=True)
    ex = overlay({
        "listen": {"client_auth": "want", "max_connection_age": 60},
        "login": {"required_auth_methods": '[["tls-cert","password"]]', "password": "file",
                  "password_file": str(folder / "passwords")},
        "sessions": dict({"store": store}, **(sessions or {})),
        "audit": {"file": str(folder / "audit.jsonl")}}, extra)
    cfg = write_config(folder, pki, upstream=upstream_url, extra=ex)
    for account in ("alice", "bob"):
        set_password(folder / "passwords", account, PASSWORD)
    return cfg


def login(port: int, pki: Pki, account: str = "alice") -> str:
    """Log in through ``POST /.certgate/api/auth``; returns the ``Cookie`` header value."""
    status, headers, body = request(port, "POST", "/.certgate/api/auth", cert=pki.client(account), ca=pki.ca_pem,
                                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                                    body=json.dumps({"account": account, "password": PASSWORD}).encode())
    assert status == 200, (status, body)
    cookies = headers.get_all("Set-Cookie") or []
    assert len(cookies) == 1 and cookies[0].startswith("__Host-certgate="), cookies
    return cookies[0].split(";", 1)[0]


def get(port: int, pki: Pki, cookie: str, path: str = "/", account: str = "alice",
        cert: bool = True) -> tuple[int, http.client.HTTPMessage, bytes]:
    """GET ``path`` on a new connection (with ``account``'s certificate unless ``cert`` is False)."""
    return request(port, "GET", path, cert=pki.client(account) if cert else None, ca=pki.ca_pem,
                   headers={"Cookie": cookie, "Accept": "application/json"})
