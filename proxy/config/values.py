"""The parsed configuration: :class:`Config`, its routes and their upstream TLS settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from proxy.config.sections import (AdminSection, AuditSection, CockpitSection, HeadersSection, JocSection,
                                   LdapSection, LimitsSection, ListenSection, LogSection, LoginSection,
                                   SessionsSection, WebauthnSection, WebsocketSection, default_values)
from trust.access import AccessRule
from trust.settings import TrustSettings


@dataclass(frozen=True)
class UpstreamTLS:
    """How certgate verifies (and authenticates to) an https upstream."""

    server_name: str
    ca: Path | None
    client_certificate: Path | None
    client_key: Path | None
    unsafe_skip_verify: bool


@dataclass(frozen=True)
class Route:
    """One upstream and the path prefix that reaches it ("/" for the default upstream)."""

    name: str
    prefix: str
    url: str
    scheme: str
    host: str
    port: int
    base_path: str
    kind: str
    connect_timeout: float
    read_timeout: float
    max_idle: int
    max_connections: int
    tls: UpstreamTLS | None
    unsafe_forward_raw_target: bool = False


@dataclass(frozen=True)
class Config:
    """The whole configuration, every section a typed value (see :mod:`proxy.config.sections`)."""

    path: Path
    base_dir: Path
    listen: ListenSection
    trust: TrustSettings
    access_rules: list[AccessRule]
    routes: list[Route]  # default route last
    headers: HeadersSection
    limits: LimitsSection
    websocket: WebsocketSection
    login: LoginSection
    sessions: SessionsSection
    cockpit: CockpitSection
    joc: JocSection
    admin: AdminSection
    audit: AuditSection
    log: LogSection
    account_rules: dict[str, list[list[str]]] = field(default_factory=dict)
    webauthn: WebauthnSection = field(default_factory=lambda: WebauthnSection(**default_values("webauthn")))
    account_uv: dict[str, str] = field(default_factory=dict)
    ldap: LdapSection = field(default_factory=lambda: LdapSection(**default_values("ldap")))

    @property
    def default_route(self) -> Route:
        return self.routes[-1]

    def route_for(self, path: str) -> Route:
        """The route whose prefix is the longest match of ``path``."""
        for r in self.routes:
            if r.prefix == "/" or path == r.prefix.rstrip("/") or path.startswith(r.prefix):
                return r
        return self.routes[-1]
