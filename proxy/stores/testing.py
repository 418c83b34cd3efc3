"""Public fakes for tests of code that uses sessions, stores and the gate (txacme style).

- :class:`FakeVerdict` stands in for ``trust.verify.Verdict`` (ok, fingerprint, subject ...);
- :func:`make_identity` builds a ``ConnectionIdentity`` (valid, invalid, or no certificate);
- :class:`FakeTunnels` records ``close_session`` calls like ``proxy.http.tunnel.TunnelRegistry``;
- :func:`make_config` builds a ``proxy.config.Config`` from schema defaults plus overrides,
  without files (the TLS key/cert paths are dummies).

These are *fakes*, not mocks: they behave like the real thing for what they model, and are
used by the session, gate and admin unit tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from proxy.listener.identity import ConnectionIdentity, anonymous

if TYPE_CHECKING:  # pragma: no cover
    from proxy.config import Config


@dataclass(frozen=True)
class FakeVerdict:
    """The parts of ``trust.verify.Verdict`` the gate and sessions read."""

    ok: bool
    fingerprint: str
    subject: str = "CN=alice"
    issuer: str = "CN=Test CA"
    summary: str = ""
    reasons: tuple[Any, ...] = ()
    ca_fingerprint: str = ""


def fingerprint_of(der: bytes) -> str:
    """Lower-case hex SHA-256 (how certgate names certificates)."""
    return hashlib.sha256(der).hexdigest()


def make_identity(account: str | None = "alice", *, cert: bytes | None = b"cert-alice", handshake_at: float = 0.0,
                  ok: bool = True, presented: bool = True, full_handshake: bool = True, client_ip: str = "127.0.0.1",
                  invalid_reason: str = "certificate has expired", chain: tuple[bytes, ...] = (b"ca",),
                  reason_code: str = "expired") -> ConnectionIdentity:
    """A connection identity. ``cert`` stands for the leaf DER (its SHA-256 is the fingerprint).

    ``presented=False`` gives an anonymous connection; ``ok=False`` a presented but invalid
    certificate whose ``invalid_reason`` is the given text and whose verdict has one reason
    with code ``reason_code``.
    """
    from trust.presented import PresentedCertificate
    from trust.verify import Reason

    if not presented or cert is None:
        return anonymous(client_ip, 40000, handshake_at, full_handshake=full_handshake)
    fp = fingerprint_of(cert)
    verdict = FakeVerdict(ok=ok, fingerprint=fp, subject=f"CN={account}", summary="" if ok else invalid_reason,
                          reasons=() if ok else (Reason(reason_code, invalid_reason),))
    return ConnectionIdentity(presented=True, verdict=verdict,  # type: ignore[arg-type]
                              account=account if ok else None, mapping_error=None, handshake_at=handshake_at,
                              full_handshake=full_handshake, protocol="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256",
                              client_ip=client_ip, client_port=40000,
                              certificate=PresentedCertificate(cert, chain))


@dataclass
class FakeTunnels:
    """Records ``close_session(session_id, code, reason)`` calls; ``live`` lists open sessions."""

    closed: list[tuple[str, int, str]] = field(default_factory=list)
    live: set[str] = field(default_factory=set)

    def close_session(self, session_id: str, code: int = 1008, reason: str = "") -> int:
        self.closed.append((session_id, code, reason))
        n = 1 if session_id in self.live else 0
        self.live.discard(session_id)
        return n

    def session_ids(self) -> set[str]:
        return set(self.live)


def make_config(sections: Mapping[str, Mapping[str, Any]] | None = None, *,
                account_rules: Mapping[str, list[list[str]]] | None = None, access_rules: list[Any] | None = None,
                account_uv: Mapping[str, str] | None = None,
                base_dir: Path | str = "/nonexistent") -> Config:
    """A ``proxy.config.Config`` from the schema defaults, with ``sections`` overriding values.

    Example: ``make_config({"login": {"required_auth_methods": [["tls-cert", "password"]]}})``.
    Values are taken as already parsed (no validation here).
    """
    from proxy.config import SCHEMA, build_config, default_values, route_from_values
    from proxy.sessions.presence_rules import derive_defaults
    from trust.settings import TrustSettings

    base = Path(base_dir)
    vals: dict[str, dict[str, Any]] = {}
    for sec in SCHEMA:
        vals[sec] = default_values(sec)
        vals[sec].update((sections or {}).get(sec, {}))
    if vals["upstream"]["url"] is None:
        vals["upstream"]["url"] = "http://127.0.0.1:9"
    derive_defaults(vals)
    routes = [route_from_values("default", vals["upstream"], "/")]
    return build_config(vals, path=base / "certgate.conf", base_dir=base, trust=TrustSettings(store=base / "trust"),
                        routes=routes, access_rules=list(access_rules or []), account_rules=account_rules,
                        account_uv=account_uv)
