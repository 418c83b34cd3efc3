"""The configuration's sections as typed values: every key present, typed, documented once.

Each class is one INI section. Its fields are the keys, each ``Annotated[type, Key(kind,
default, doc, lo, hi)]``: the type is what the code reads, the :class:`~proxy.config.keys.Key`
how :mod:`proxy.config.parse` turns the text into it. :data:`SCHEMA` is read back from these
declarations; ``conf/certgate.conf`` documents every key (a test keeps them in step).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from proxy.config.keys import Key, defaults_of, keys_of


@dataclass(frozen=True)
class ListenSection:
    """``[listen]``: the client-facing TLS listener."""

    address: Annotated[str, Key("str", "127.0.0.1", "address to listen on (IPv4 or IPv6 literal)")]
    port: Annotated[int, Key("int", 8443, "TCP port", 1, 65535)]
    certificate: Annotated[Path | None, Key("path", None, "server certificate chain, PEM, leaf first", required=True)]
    key: Annotated[Path | None, Key("path", None, "server private key, PEM (RSA or ECDSA)", required=True)]
    client_auth: Annotated[Literal["need", "want", "none"], Key(
        "choice", "need",
        "need: a valid client certificate is required in the handshake; want: optional (invalid ones are "
        "recorded and explained); none: not requested")]
    sni_certificates: Annotated[list[str], Key(
        "list", [],
        "extra certificates chosen by SNI: NAME=CERT.pem:KEY.pem, comma separated")]
    tls_min_version: Annotated[Literal["1.2", "1.3"], Key("choice", "1.2", "lowest TLS version accepted")]
    handshake_timeout: Annotated[float, Key("float", 10.0, "seconds for a TLS handshake to complete", 0.1, 300)]
    header_timeout: Annotated[float, Key(
        "float", 10.0,
        "seconds to receive a complete request head (slowloris)", 0.1, 300)]
    idle_timeout: Annotated[float, Key(
        "float", 120.0,
        "seconds a keep-alive connection may sit idle", 1, 86400)]
    max_connection_age: Annotated[float, Key(
        "float", 60.0,
        "seconds after its handshake a connection is closed: at once when idle, else its next response "
        "carries Connection: close, so the client re-proves its certificate (0 = never); capped by [sessions] "
        "presence_interval", 0, 86400)]
    max_connections: Annotated[int, Key("int", 10000, "concurrent client connections per worker", 1, 1000000)]
    workers: Annotated[int, Key("int", 1, "worker processes sharing the port (SO_REUSEPORT)", 1, 64)]


@dataclass(frozen=True)
class UpstreamSection:
    """``[upstream]``: the default upstream; ``[route:NAME]`` sections take the same keys plus ``prefix``."""

    url: Annotated[str, Key("url", None, "upstream base URL, http:// or https://", required=True)]
    kind: Annotated[Literal["generic", "cockpit", "joc"], Key(
        "choice", "generic",
        "generic, cockpit (enables the Cockpit front door) or joc")]
    connect_timeout: Annotated[float, Key("float", 5.0, "seconds to connect to the upstream", 0.1, 300)]
    read_timeout: Annotated[float, Key(
        "float", 60.0,
        "seconds to wait for the upstream's response head", 0.1, 3600)]
    max_idle: Annotated[int, Key("int", 32, "idle keep-alive connections kept per upstream", 0, 10000)]
    max_connections: Annotated[int, Key("int", 512, "concurrent connections per upstream", 1, 100000)]
    tls_server_name: Annotated[str, Key(
        "str", "",
        "name the upstream's certificate must carry (default: the URL's host)")]
    tls_ca: Annotated[Path | None, Key(
        "path", None,
        "CA bundle for an https upstream (default: the system store)")]
    tls_client_certificate: Annotated[Path | None, Key(
        "path", None,
        "client certificate (PEM) certgate presents upstream")]
    tls_client_key: Annotated[Path | None, Key("path", None, "its private key (PEM)")]
    unsafe_skip_verify: Annotated[bool, Key(
        "bool", False,
        "UNSAFE: do not verify an https upstream's certificate")]
    unsafe_forward_raw_target: Annotated[bool, Key(
        "bool", False,
        "UNSAFE: forward the request target as the client sent it, not the canonical path certgate decided on")]


@dataclass(frozen=True)
class HeadersSection:
    """``[headers]``: what certgate tells the upstream in request headers."""

    account: Annotated[str, Key("header", "X-Remote-User", "header carrying the account to the upstream")]
    forwarded: Annotated[bool, Key("bool", True, "set X-Forwarded-For/-Proto/-Host from the connection")]
    client_cert: Annotated[bool, Key("bool", False, "set RFC 9440 Client-Cert and Client-Cert-Chain")]
    strip: Annotated[list[str], Key("list", [], "extra request header names removed from every client request")]
    preserve_host: Annotated[bool, Key(
        "bool", True,
        "pass the client's Host header unchanged (Cockpit needs it)")]


@dataclass(frozen=True)
class LimitsSection:
    """``[limits]``: request size limits (answers 413, 414, 431)."""

    max_request_line: Annotated[int, Key("int", 8192, "bytes in the request line (longer: 414)", 256, 1048576)]
    max_header_size: Annotated[int, Key(
        "int", 16384,
        "bytes in the whole request head (larger: 431)", 1024, 1048576)]
    max_headers: Annotated[int, Key("int", 100, "header lines per request (more: 431)", 8, 10000)]
    max_body_unauthenticated: Annotated[int, Key(
        "int", 65536,
        "request body bytes accepted before authentication (413)", 0, 1 << 40)]
    max_body: Annotated[int, Key(
        "int", 0,
        "request body bytes for authenticated requests (0 = unlimited, streamed)", 0, 1 << 50)]
    max_pipeline: Annotated[int, Key("int", 16, "pipelined requests queued on one connection", 1, 1024)]


@dataclass(frozen=True)
class WebsocketSection:
    """``[websocket]``: WebSocket upgrades and tunnels."""

    origins: Annotated[list[str], Key(
        "list", [],
        "allowed Origin values for WebSocket upgrades (empty = any; the upstream may still check)")]
    idle_timeout: Annotated[float, Key(
        "float", 0.0,
        "seconds a tunnel may carry no bytes (0 = no limit)", 0, 86400 * 7)]


@dataclass(frozen=True)
class LoginSection:
    """``[login]``: login rules, factors and throttling."""

    required_auth_methods: Annotated[list[list[str]], Key(
        "json", [["tls-cert"]],
        "JSON list of method lists; any one list suffices. Methods: tls-cert, password, totp, webauthn. "
        "[[\"tls-cert\"]] = certificate alone")]
    password: Annotated[Literal["upstream", "file"], Key(
        "choice", "upstream",
        "who checks passwords: upstream (Cockpit PAM, JOC) or file")]
    password_file: Annotated[Path | None, Key("path", None, "scrypt hash file managed by `certgate passwd`")]
    totp_secrets: Annotated[Path | None, Key("path", None, "encrypted TOTP secrets managed by `certgate totp`")]
    totp_key: Annotated[Path | None, Key("path", None, "key file that encrypts the TOTP secrets")]
    totp_window: Annotated[int, Key("int", 1, "TOTP time steps accepted either side of now", 0, 10)]
    receipt_lifetime: Annotated[float, Key("float", 300.0, "seconds an auth receipt lives", 10, 86400)]
    max_startups: Annotated[tuple[int, int, int], Key(
        "maxstartups", (10, 100, 10),
        "concurrent pending logins: N or start:rate:full (as cockpit)")]
    failure_limit: Annotated[int, Key(
        "int", 5,
        "failures per account, certificate or IP before throttling", 1, 1000)]
    failure_window: Annotated[float, Key("float", 900.0, "seconds a failure counts", 1, 86400 * 30)]
    lockout: Annotated[float, Key("float", 900.0, "seconds logins stay refused after the limit", 1, 86400 * 30)]
    response_timeout: Annotated[float, Key("float", 60.0, "seconds to answer a second-factor prompt", 1, 900)]
    timeout: Annotated[float, Key("float", 30.0, "seconds a login step may take", 1, 900)]
    secret_key: Annotated[Path | None, Key(
        "path", "certgate.secret",
        "key file signing receipts and assertions (created if missing)")]


@dataclass(frozen=True)
class WebauthnSection:
    """``[webauthn]``: security keys as a login factor."""

    rp_id: Annotated[str, Key(
        "str", "",
        "WebAuthn relying-party id: the host name people type (never an IP address); required when a rule "
        "names webauthn")]
    origin: Annotated[str, Key(
        "str", "",
        "the exact origin of certgate's pages, https://HOST[:PORT]; required when a rule names webauthn")]
    rp_name: Annotated[str, Key("str", "certgate", "the name authenticators show")]
    credentials: Annotated[Path | None, Key(
        "path", None,
        "JSON file of the registered keys (written by certgate; `certgate webauthn list|remove`)")]
    user_verification: Annotated[Literal["preferred", "required"], Key(
        "choice", "preferred",
        "ask the authenticator to verify the person (PIN, biometrics): preferred or required; [account:NAME] "
        "webauthn_user_verification overrides it")]
    challenge_lifetime: Annotated[float, Key(
        "float", 120.0,
        "seconds a WebAuthn challenge is valid (single use)", 10, 600)]


@dataclass(frozen=True)
class SessionsSection:
    """``[sessions]``: trusted sessions and where they are stored."""

    store: Annotated[str, Key(
        "str", "sqlite:sessions.db",
        "memory | sqlite:PATH | redis://[USER@]HOST:PORT/DB | rediss://... (TLS) | "
        "redis+sentinel://[USER@]HOST:PORT[,HOST:PORT]/SERVICE/DB")]
    store_deadline: Annotated[float, Key(
        "float", 2.0,
        "seconds a store operation may take; past it requests that need the store answer 503 "
        "session-store-unavailable", 0.05, 60)]
    store_max_queue: Annotated[int, Key(
        "int", 256,
        "store operations in flight per worker; more fail at once", 1, 100000)]
    redis_pool_size: Annotated[int, Key("int", 4, "Redis connections per worker", 1, 64)]
    redis_password_file: Annotated[Path | None, Key(
        "path", None,
        "file whose first line is the Redis password (AUTH / ACL user)")]
    redis_ca: Annotated[Path | None, Key(
        "path", None,
        "CA bundle verifying a rediss:// server (default: the system store)")]
    max_per_account: Annotated[int, Key(
        "int", 0,
        "live sessions per account (0: no limit); [account:NAME] max_sessions overrides it", 0, 100000)]
    on_limit: Annotated[Literal["refuse", "replace"], Key(
        "choice", "refuse",
        "at max_per_account: refuse the new login, or replace (end) the oldest session")]
    grace: Annotated[float, Key(
        "float", 300.0,
        "seconds a session lives after the certificate was last proved", 1, 86400)]
    long_grace: Annotated[float, Key("float", 3600.0, "grace after activation through the API", 1, 86400 * 7)]
    idle_timeout: Annotated[float, Key(
        "float", 1800.0,
        "seconds without a request before the session ends", 1, 86400 * 7)]
    max_lifetime: Annotated[float, Key(
        "float", 43200.0,
        "absolute session lifetime in seconds", 60, 86400 * 30)]
    cookie_name: Annotated[str, Key("str", "__Host-certgate", "session cookie name (must start with __Host-)")]
    presence_interval: Annotated[float, Key(
        "float", None,
        "seconds between presence pings of the page script, and the handshake age at which connections close; "
        "default: grace / 4, at most 30; at most grace / 3 where the script is injected", 1, 3600)]
    inject_presence_script: Annotated[Literal["auto"] | bool, Key(
        "autobool", "auto",
        "add the presence script to upstream HTML pages of session-guarded routes: auto (routes of kind "
        "cockpit or joc, single-page apps), yes (every route) or no")]
    #: derived: ``[account:NAME] max_sessions`` by account (not a key of its own)
    account_limits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CockpitSection:
    """``[cockpit]``: the Cockpit front door."""

    mode: Annotated[Literal["bearer", "basic"], Key(
        "choice", "bearer",
        "bearer: certgate hands cockpit-ws a signed assertion checked by `certgate cockpit-auth`; basic: pass "
        "the Basic credentials (PAM checks the password)")]
    url_root: Annotated[str, Key("str", "/", "cockpit's UrlRoot")]
    assertion_lifetime: Annotated[float, Key("float", 30.0, "seconds a Bearer assertion is valid", 1, 900)]


@dataclass(frozen=True)
class JocSection:
    """``[joc]``: the JS7 JOC Cockpit front door."""

    login_path: Annotated[str, Key("str", "/joc/api/authentication/login", "JOC's login API path")]
    logout_path: Annotated[str, Key(
        "str", "/joc/api/authentication/logout",
        "JOC's logout API path: a POST forwarded within a certgate session ends that session too")]
    gui_prefix: Annotated[str, Key(
        "str", "/joc/",
        "JOC's GUI files (GET/HEAD below this prefix, outside /joc/api/) are forwarded without a certgate "
        "session, so JOC's own login page loads (empty = off)")]
    prelogin_api: Annotated[list[str], Key(
        "list", ["/joc/api/configuration/login", "/joc/api/iam/identityproviders"],
        "JOC API paths its login page calls before anyone logs in (POST, no session needed)")]


@dataclass(frozen=True)
class LdapSection:
    """``[ldap]``: the directory used by ``[trust] mapping = ldap``."""

    url: Annotated[str, Key(
        "str", "",
        "with [trust] mapping = ldap: ldaps://HOST[:PORT], or ldap://HOST[:PORT] with starttls = yes")]
    starttls: Annotated[bool, Key("bool", False, "upgrade an ldap:// connection with StartTLS before binding")]
    ca_file: Annotated[Path | None, Key(
        "path", None,
        "CA bundle the directory's certificate must chain to (default: the system store); the host name in "
        "url must be in its certificate")]
    unsafe_plaintext: Annotated[bool, Key(
        "bool", False,
        "UNSAFE: allow ldap:// without StartTLS (bind password and answers in clear)")]
    bind_dn: Annotated[str, Key("str", "", "DN certgate binds as (empty = anonymous)")]
    bind_password_file: Annotated[Path | None, Key(
        "path", None,
        "file whose first line is the bind password (read at each new directory connection)")]
    base_dn: Annotated[str, Key("str", "", "subtree searched for accounts")]
    scope: Annotated[Literal["sub", "one"], Key(
        "choice", "sub",
        "sub: the whole subtree; one: direct children of base_dn")]
    styles: Annotated[list[str], Key(
        "list", ["certificate", "altsecid", "upn"],
        "certificate (userCertificate;binary), altsecid (altSecurityIdentities), upn (userPrincipalName), "
        "email (mail); ORed in one search")]
    altsecid_forms: Annotated[list[str], Key(
        "list", ["issuer-subject", "issuer-serial", "ski"],
        "altSecurityIdentities X509 forms: issuer-subject, issuer-serial, ski, unsafe-subject, unsafe-rfc822")]
    certificate_assertion: Annotated[Literal["der", "serial-issuer"], Key(
        "choice", "der",
        "der: the certificate's bytes (Active Directory, 389-ds, FreeIPA); serial-issuer: OpenLDAP's "
        "certificateExactMatch")]
    account_attribute: Annotated[str, Key(
        "str", "uid",
        "attribute holding the account (uid, sAMAccountName, ...)")]
    filter: Annotated[str, Key("str", "", "extra LDAP filter ANDed with the lookup, e.g. (objectClass=person)")]
    timeout: Annotated[float, Key(
        "float", 3.0,
        "seconds for a lookup (connect, TLS, bind, search); then it fails closed", 0.1, 60)]
    pool_size: Annotated[int, Key("int", 4, "directory connections (and lookup threads) kept", 1, 64)]
    cache_ttl: Annotated[float, Key(
        "float", 300.0,
        "seconds a mapped account is reused without asking (0 = never cache)", 0, 86400)]
    negative_cache_ttl: Annotated[float, Key(
        "float", 30.0,
        "seconds a 'no account' answer is reused (0 = never cache)", 0, 3600)]
    cache_size: Annotated[int, Key("int", 10000, "certificates whose account is cached", 1, 1000000)]
    negative_cache_size: Annotated[int, Key(
        "int", 1000,
        "certificates whose 'no account' answer is cached", 1, 1000000)]


@dataclass(frozen=True)
class AdminSection:
    """``[admin]``: the admin listener (health, metrics, sessions)."""

    address: Annotated[str, Key("str", "127.0.0.1", "admin listener address (health, metrics, sessions)")]
    port: Annotated[int, Key("int", 0, "admin listener port (0 = off)", 0, 65535)]
    token_file: Annotated[Path | None, Key(
        "path", None,
        "file holding a bearer token required by the admin API")]


@dataclass(frozen=True)
class AuditSection:
    """``[audit]``: the audit log."""

    file: Annotated[str, Key("logpath", "-", "JSON-lines audit log path, or - for standard error")]


@dataclass(frozen=True)
class LogSection:
    """``[log]``: the operational and access logs."""

    level: Annotated[Literal["debug", "info", "warn", "error"], Key("choice", "info", "log level")]
    file: Annotated[str, Key("logpath", "-", "log file path, or - for standard error")]
    json_file: Annotated[str, Key(
        "logpath", "",
        "also write the operational log as JSON lines here (empty = off)")]
    access_file: Annotated[str, Key(
        "logpath", "access.log",
        "access log, one JSON line per request (- = standard error, empty = off)")]

#: Section name -> its class (``[upstream]`` becomes the default :class:`~proxy.config.values.Route`).
SECTIONS: dict[str, type] = {
    "listen": ListenSection, "upstream": UpstreamSection, "headers": HeadersSection, "limits": LimitsSection,
    "websocket": WebsocketSection, "login": LoginSection, "webauthn": WebauthnSection,
    "sessions": SessionsSection, "cockpit": CockpitSection, "joc": JocSection, "ldap": LdapSection,
    "admin": AdminSection, "audit": AuditSection, "log": LogSection,
}

#: Every plain section and its keys, in the order problems are reported.
SCHEMA: dict[str, dict[str, Key]] = {name: keys_of(cls) for name, cls in SECTIONS.items()}

ROUTE_KEYS: dict[str, Key] = SCHEMA["upstream"] | {
    "prefix": Key("str", None, "path prefix routed to this upstream (longest prefix wins)", required=True),
}
#: Sections handled by trust.settings (``[trust]``) and named sections (``[access:NAME]``,
#: ``[route:NAME]``, ``[account:NAME]``, ``[ocsp:NAME]``).
PREFIX_SECTIONS = ("access:", "route:", "account:", "ocsp:")
ACCOUNT_KEYS: dict[str, Key] = {
    "required_auth_methods": SCHEMA["login"]["required_auth_methods"],
    "max_sessions": Key("int", None, "live sessions of this account (overrides [sessions] max_per_account; 0: no "
                        "limit)", 0, 100000),
    "webauthn_user_verification": Key("choice", None, "this account's WebAuthn user verification (default: "
                                      "[webauthn] user_verification)", choices=("preferred", "required")),
}


def default_values(section: str) -> dict[str, Any]:
    """The defaults of every key of ``section``, unparsed (relative paths stay relative)."""
    return defaults_of(SCHEMA[section])


def documented_keys() -> dict[str, list[str]]:
    """Every section and key of the schema (for documentation checks)."""
    return {s: list(keys) for s, keys in SCHEMA.items()}
