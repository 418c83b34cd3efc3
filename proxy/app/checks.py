"""The start checks: everything ``certgate run`` needs before it can serve, as problems.

:func:`startup_problems` is the one validation both ``certgate check-config`` and the
service (``certgate run``, the twistd plugin) call, so the two cannot disagree. Each
problem names its section, key and reason (``trust.problems.Problem``). The checks only
look (stat, access, read, a test bind); they create no file. What they cannot tell: a
file that becomes unreadable later, a port taken between the check and the listen.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.ops.admin import admin_problems
from trust.escape import safe_text
from trust.problems import Problem

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config


def startup_problems(cfg: Config, *, bind: bool = True) -> list[Problem]:
    """Every problem that would stop the gateway from starting; empty when it can start.

    Covers the server certificates and keys, the trust store, the front doors' config, the
    session store, the login key files, the admin listener, the audit and log files and (with
    ``bind``) whether the listen and admin ports can be bound right now (a worker process,
    ``CERTGATE_WORKER=1``, shares the listen port with SO_REUSEPORT and has no admin port).
    """
    problems: list[Problem] = []
    problems += _tls_problems(cfg)
    problems += _trust_problems(cfg)
    if any(r.kind == "cockpit" for r in cfg.routes):
        from proxy.frontdoors.cockpit import config_problems

        problems += config_problems(cfg)
    problems += store_problems(cfg)
    problems += upstream_tls_problems(cfg)
    problems += _login_problems(cfg)
    problems += admin_problems(cfg)
    problems += _writable_file("audit", "file", cfg.audit.file)
    log = cfg.log
    for key, value in (("file", log.file), ("json_file", log.json_file), ("access_file", log.access_file)):
        # relative to the config's folder, as proxy.observe.logs opens them
        target = value or "-"
        if target != "-" and not Path(target).is_absolute():
            target = str(Path(cfg.base_dir) / target)
        problems += _writable_file("log", key, target)
    if bind:
        problems += port_problems("listen", "port", cfg.listen.address, cfg.listen.port,
                                  reuse_port=cfg.listen.workers > 1)
        if cfg.admin.port and os.environ.get("CERTGATE_WORKER") != "1":  # workers serve no admin API
            problems += port_problems("admin", "port", cfg.admin.address, cfg.admin.port)
    return problems


def _tls_problems(cfg: Config) -> list[Problem]:
    from proxy.listener.context import TLSConfigError, load_server_identity

    try:
        load_server_identity(cfg)
    except TLSConfigError as e:
        key = "sni_certificates" if "sni_certificates" in e.where else ("key" if _same(e.where, cfg.listen.key)
                                                                        else "certificate")
        return [Problem("listen", key, str(e))]
    return []


def _same(where: str, path: Any) -> bool:
    return path is not None and where == str(path)


def _trust_problems(cfg: Config) -> list[Problem]:
    import datetime as dt

    from trust.certinfo import normalize_fingerprint
    from trust.store import TrustStoreError, load_store

    try:
        gen = load_store(cfg.trust.store, now=dt.datetime.now(dt.timezone.utc))
    except TrustStoreError as e:
        return [Problem("trust", "store", str(p)) for p in e.problems]
    except OSError as e:
        return [Problem("trust", "store", f"{cfg.trust.store}: {e.strerror}")]
    # [ocsp:NAME] cas: a file name must be a CA of the store (fingerprints may name intermediates
    # that clients send)
    ca_files = {e.file for e in gen.entries if e.kind == "CA"}
    return [Problem(f"ocsp:{rule.name}", "cas", f"{safe_text(ca)!r} is not a CA file of the trust store "
                                                f"{cfg.trust.store}")
            for rule in cfg.trust.ocsp.rules for ca in rule.cas
            if normalize_fingerprint(ca) is None and ca not in ca_files]


def store_problems(cfg: Config) -> list[Problem]:
    """The session store: a shareable one for several workers, a writable folder for sqlite."""
    spec = cfg.sessions.store
    if cfg.listen.workers > 1 and spec == "memory":
        return [Problem("sessions", "store", "memory cannot be shared by several workers; use sqlite:PATH "
                        "or redis://")]
    if spec.startswith("sqlite:") and spec[len("sqlite:"):]:
        p = Path(spec[len("sqlite:"):])
        p = p if p.is_absolute() else Path(cfg.base_dir) / p
        return _writable_file("sessions", "store", str(p), create_dirs=True)
    return []


def upstream_tls_problems(cfg: Config) -> list[Problem]:
    """Each https route's CA bundle and client certificate/key: readable, PEM, usable together."""
    from proxy.http.upstream import _client_tls_creator

    out: list[Problem] = []
    for route in cfg.routes:
        if route.scheme != "https" or route.tls is None:
            continue
        section = "upstream" if route.name == "default" else f"route:{route.name}"
        before = len(out)
        for key, path in (("tls_ca", route.tls.ca), ("tls_client_certificate", route.tls.client_certificate),
                          ("tls_client_key", route.tls.client_key)):
            if path is not None:
                out += _readable(section, key, Path(path))
        if len(out) > before:
            continue
        try:
            _client_tls_creator(route)
        except Exception as e:  # PEM or key errors: the message says which
            key = "tls_ca" if route.tls.client_certificate is None else "tls_client_certificate"
            out.append(Problem(section, key, f"unusable: {safe_text(e) or type(e).__name__}"))
    return out


def _login_problems(cfg: Config) -> list[Problem]:
    lc = cfg.login
    out: list[Problem] = []
    secret = _resolve(cfg, lc.secret_key)
    if secret is not None:
        out += (_readable("login", "secret_key", secret) if secret.exists()
                else _writable_file("login", "secret_key", str(secret)))
    for key, value in (("password_file", lc.password_file), ("totp_secrets", lc.totp_secrets),
                       ("totp_key", lc.totp_key)):
        p = _resolve(cfg, value)
        if p is not None and p.exists():
            out += _readable("login", key, p)
    return out


def _resolve(cfg: Config, value: Any) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else Path(cfg.base_dir) / p


def _readable(section: str, key: str, path: Path) -> list[Problem]:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return [Problem(section, key, f"{path}: cannot read: {e.strerror}")]
    return []


def _writable_file(section: str, key: str, target: str, *, create_dirs: bool = False) -> list[Problem]:
    """``target`` (``-`` = standard error) can be opened for appending, or created in its folder."""
    if target == "-":
        return []
    p = Path(target)
    if p.is_dir():
        return [Problem(section, key, f"{p} is a directory")]
    if p.exists():
        if not os.access(p, os.W_OK):
            return [Problem(section, key, f"{p}: not writable")]
        return []
    folder = p.parent
    while create_dirs and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return [Problem(section, key, f"{p}: the folder {p.parent} does not exist")]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [Problem(section, key, f"{p}: cannot create it, the folder {folder} is not writable")]
    return []


def port_problems(section: str, key: str, address: str, port: int, *, reuse_port: bool = False) -> list[Problem]:
    """Whether ``address``:``port`` can be bound now (as the listener binds it); closes at once."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port and hasattr(socket, "SO_REUSEPORT"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((address, port))
    except OSError as e:
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound: {e.strerror}"
        return [Problem(section, key, f"{address}:{port} {why}")]
    return []
