"""Test helpers for the login package: a wired LoginService on a Clock and a memory store.

Real parts throughout (MemoryStore, SessionManager, Audit in memory, files in a temporary
folder); only the connection identity is a fake (:func:`tests.harness.fakes.make_identity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from twisted.internet.task import Clock

from proxy.observe.audit import memory_audit
from proxy.login.passwords import set_password
from proxy.login.service import LoginService
from proxy.http.messages import ConnContext, RequestHead
from tests.harness.config import make_config
from tests.harness.fakes import FakeTunnels, make_identity

FAST_COST = {"n": 2 ** 10, "r": 8, "p": 1}  # tests only: cheap scrypt
T0 = 1_800_000_000.0


@dataclass
class Rig:
    login: LoginService
    clock: Clock
    store: Any
    sessions: Any
    audit: Any
    folder: Path

    def conn(self, account: str | None = "alice", **kw: Any) -> ConnContext:
        """A connection whose certificate maps to ``account`` (``cert=`` picks the certificate bytes)."""
        kw.setdefault("cert", f"cert-{account}".encode())
        ident = make_identity(account, handshake_at=self.clock.seconds(), **kw)
        return ConnContext(identity=ident, connected_at=self.clock.seconds())

    def set_password(self, account: str, password: str) -> None:
        set_password(self.folder / "passwords", account, password, **FAST_COST)


def make_rig(folder: Path, login: Mapping[str, Any] | None = None, *, account_rules: Mapping[str, Any] | None = None,
             store: Any = None, rng: Any = None, clock: Clock | None = None,
             webauthn: Mapping[str, Any] | None = None, account_uv: Mapping[str, str] | None = None) -> Rig:
    """A LoginService with ``password = file`` in ``folder`` and ``[login]`` (and ``[webauthn]``) overrides."""
    from proxy.sessions.manager import SessionManager
    from proxy.stores.memory import MemoryStore

    folder = Path(folder)
    values = {"password": "file", "password_file": folder / "passwords", "totp_secrets": folder / "totp",
              "totp_key": folder / "totp.key", "secret_key": folder / "secret",
              "required_auth_methods": [["tls-cert", "password"], ["tls-cert", "password", "totp"]]}
    values.update(login or {})
    cfg = make_config({"login": values, "webauthn": dict(webauthn or {})}, account_rules=account_rules,
                      account_uv=account_uv, base_dir=folder)
    if clock is None:
        clock = Clock()
        clock.advance(T0)
    store = store if store is not None else MemoryStore()
    audit = memory_audit(clock.seconds)
    sessions = SessionManager(store, clock, cfg.sessions, FakeTunnels(), audit)
    svc = LoginService(config=cfg, store=store, sessions=sessions, clock=clock, audit=audit, rng=rng)
    return Rig(svc, clock, store, sessions, audit, folder)


def head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> RequestHead:
    """A head as the HTTP layer makes it (canonical target; TargetError when it has none)."""
    from proxy.paths import canonical_target

    return RequestHead(method=method, target=canonical_target(target, method), version=b"1.1",
                       headers=list(headers or []))
