"""certgate's INI configuration: parse, validate, and report every problem.

``load_config(path)`` returns a :class:`Config` or raises :class:`ConfigError` carrying
*all* problems found (section, key, reason), so ``certgate check-config`` can print them
in one go. Relative paths are relative to the config file's folder. The schema below is
the public contract; ``conf/certgate.conf`` documents every key (a test checks both agree).
"""

from __future__ import annotations

import configparser
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from proxy.sessions.presence_rules import validate_presence
from trust.problems import Problem


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


# --------------------------------------------------------------------------- schema

@dataclass(frozen=True)
class Key:
    """One configuration key: how to parse it, its default and its documentation."""

    kind: str  # str | int | float | bool | choice | path | logpath | url | list | json | header | maxstartups
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False


SCHEMA: dict[str, dict[str, Key]] = {
    "listen": {
        "address": Key("str", "127.0.0.1", "address to listen on (IPv4 or IPv6 literal)"),
        "port": Key("int", 8443, "TCP port", 1, 65535),
        "certificate": Key("path", None, "server certificate chain, PEM, leaf first", required=True),
        "key": Key("path", None, "server private key, PEM (RSA or ECDSA)", required=True),
        "client_auth": Key("choice", "need", "need: a valid client certificate is required in the handshake; "
                           "want: optional (invalid ones are recorded and explained); none: not requested",
                           choices=("need", "want", "none")),
        "sni_certificates": Key("list", [], "extra certificates chosen by SNI: NAME=CERT.pem:KEY.pem, comma separated"),
        "tls_min_version": Key("choice", "1.2", "lowest TLS version accepted", choices=("1.2", "1.3")),
        "handshake_timeout": Key("float", 10.0, "seconds for a TLS handshake to complete", 0.1, 300),
        "header_timeout": Key("float", 10.0, "seconds to receive a complete request head (slowloris)", 0.1, 300),
        "idle_timeout": Key("float", 120.0, "seconds a keep-alive connection may sit idle", 1, 86400),
        "max_connection_age": Key("float", 60.0, "seconds after its handshake a connection is closed: "
                                  "at once when idle, else its next response carries Connection: close, so the "
                                  "client re-proves its certificate (0 = never); capped by [sessions] "
                                  "presence_interval", 0, 86400),
        "max_connections": Key("int", 10000, "concurrent client connections per worker", 1, 1000000),
        "workers": Key("int", 1, "worker processes sharing the port (SO_REUSEPORT)", 1, 64),
    },
    "upstream": {
        "url": Key("url", None, "upstream base URL, http:// or https://", required=True),
        "kind": Key("choice", "generic", "generic, cockpit (enables the Cockpit front door) or joc",
                    choices=("generic", "cockpit", "joc")),
        "connect_timeout": Key("float", 5.0, "seconds to connect to the upstream", 0.1, 300),
        "read_timeout": Key("float", 60.0, "seconds to wait for the upstream's response head", 0.1, 3600),
        "max_idle": Key("int", 32, "idle keep-alive connections kept per upstream", 0, 10000),
        "max_connections": Key("int", 512, "concurrent connections per upstream", 1, 100000),
        "tls_server_name": Key("str", "", "name the upstream's certificate must carry (default: the URL's host)"),
        "tls_ca": Key("path", None, "CA bundle for an https upstream (default: the system store)"),
        "tls_client_certificate": Key("path", None, "client certificate (PEM) certgate presents upstream"),
        "tls_client_key": Key("path", None, "its private key (PEM)"),
        "unsafe_skip_verify": Key("bool", False, "UNSAFE: do not verify an https upstream's certificate"),
        "unsafe_forward_raw_target": Key("bool", False, "UNSAFE: forward the request target as the client "
                                         "sent it, not the canonical path certgate decided on"),
    },
    "headers": {
        "account": Key("header", "X-Remote-User", "header carrying the account to the upstream"),
        "forwarded": Key("bool", True, "set X-Forwarded-For/-Proto/-Host from the connection"),
        "client_cert": Key("bool", False, "set RFC 9440 Client-Cert and Client-Cert-Chain"),
        "strip": Key("list", [], "extra request header names removed from every client request"),
        "preserve_host": Key("bool", True, "pass the client's Host header unchanged (Cockpit needs it)"),
    },
    "limits": {
        "max_request_line": Key("int", 8192, "bytes in the request line (longer: 414)", 256, 1048576),
        "max_header_size": Key("int", 16384, "bytes in the whole request head (larger: 431)", 1024, 1048576),
        "max_headers": Key("int", 100, "header lines per request (more: 431)", 8, 10000),
        "max_body_unauthenticated": Key("int", 65536, "request body bytes accepted before authentication (413)",
                                        0, 1 << 40),
        "max_body": Key("int", 0, "request body bytes for authenticated requests (0 = unlimited, streamed)",
                        0, 1 << 50),
        "max_pipeline": Key("int", 16, "pipelined requests queued on one connection", 1, 1024),
    },
    "websocket": {
        "origins": Key("list", [], "allowed Origin values for WebSocket upgrades (empty = any; the upstream "
                       "may still check)"),
        "idle_timeout": Key("float", 0.0, "seconds a tunnel may carry no bytes (0 = no limit)", 0, 86400 * 7),
    },
    "login": {
        "required_auth_methods": Key("json", [["tls-cert"]], "JSON list of method lists; any one list suffices. "
                                     "Methods: tls-cert, password, totp, webauthn. [[\"tls-cert\"]] = certificate "
                                     "alone"),
        "password": Key("choice", "upstream", "who checks passwords: upstream (Cockpit PAM, JOC) or file",
                        choices=("upstream", "file")),
        "password_file": Key("path", None, "scrypt hash file managed by `certgate passwd`"),
        "totp_secrets": Key("path", None, "encrypted TOTP secrets managed by `certgate totp`"),
        "totp_key": Key("path", None, "key file that encrypts the TOTP secrets"),
        "totp_window": Key("int", 1, "TOTP time steps accepted either side of now", 0, 10),
        "receipt_lifetime": Key("float", 300.0, "seconds an auth receipt lives", 10, 86400),
        "max_startups": Key("maxstartups", (10, 100, 10), "concurrent pending logins: N or start:rate:full (as cockpit)"),
        "failure_limit": Key("int", 5, "failures per account, certificate or IP before throttling", 1, 1000),
        "failure_window": Key("float", 900.0, "seconds a failure counts", 1, 86400 * 30),
        "lockout": Key("float", 900.0, "seconds logins stay refused after the limit", 1, 86400 * 30),
        "response_timeout": Key("float", 60.0, "seconds to answer a second-factor prompt", 1, 900),
        "timeout": Key("float", 30.0, "seconds a login step may take", 1, 900),
        "secret_key": Key("path", "certgate.secret", "key file signing receipts and assertions (created if missing)"),
    },
    "webauthn": {
        "rp_id": Key("str", "", "WebAuthn relying-party id: the host name people type (never an IP address); "
                     "required when a rule names webauthn"),
        "origin": Key("str", "", "the exact origin of certgate's pages, https://HOST[:PORT]; required when a "
                      "rule names webauthn"),
        "rp_name": Key("str", "certgate", "the name authenticators show"),
        "credentials": Key("path", None, "JSON file of the registered keys (written by certgate; `certgate "
                           "webauthn list|remove`)"),
        "user_verification": Key("choice", "preferred", "ask the authenticator to verify the person (PIN, "
                                 "biometrics): preferred or required; [account:NAME] webauthn_user_verification "
                                 "overrides it", choices=("preferred", "required")),
        "challenge_lifetime": Key("float", 120.0, "seconds a WebAuthn challenge is valid (single use)", 10, 600),
    },
    "sessions": {
        "store": Key("str", "sqlite:sessions.db", "memory | sqlite:PATH | redis://[USER@]HOST:PORT/DB | "
                     "rediss://... (TLS) | redis+sentinel://[USER@]HOST:PORT[,HOST:PORT]/SERVICE/DB"),
        "store_deadline": Key("float", 2.0, "seconds a store operation may take; past it requests that need the "
                              "store answer 503 session-store-unavailable", 0.05, 60),
        "store_max_queue": Key("int", 256, "store operations in flight per worker; more fail at once", 1, 100000),
        "redis_pool_size": Key("int", 4, "Redis connections per worker", 1, 64),
        "redis_password_file": Key("path", None, "file whose first line is the Redis password (AUTH / ACL user)"),
        "redis_ca": Key("path", None, "CA bundle verifying a rediss:// server (default: the system store)"),
        "max_per_account": Key("int", 0, "live sessions per account (0: no limit); [account:NAME] max_sessions "
                               "overrides it", 0, 100000),
        "on_limit": Key("choice", "refuse", "at max_per_account: refuse the new login, or replace (end) the "
                        "oldest session", choices=("refuse", "replace")),
        "grace": Key("float", 300.0, "seconds a session lives after the certificate was last proved", 1, 86400),
        "long_grace": Key("float", 3600.0, "grace after activation through the API", 1, 86400 * 7),
        "idle_timeout": Key("float", 1800.0, "seconds without a request before the session ends", 1, 86400 * 7),
        "max_lifetime": Key("float", 43200.0, "absolute session lifetime in seconds", 60, 86400 * 30),
        "cookie_name": Key("str", "__Host-certgate", "session cookie name (must start with __Host-)"),
        "presence_interval": Key("float", None, "seconds between presence pings of the page script, and the "
                                 "handshake age at which connections close; default: grace / 4, at most 30; "
                                 "at most grace / 3 where the script is injected", 1, 3600),
        "inject_presence_script": Key("autobool", "auto", "add the presence script to upstream HTML pages of "
                                      "session-guarded routes: auto (routes of kind cockpit or joc, single-page "
                                      "apps), yes (every route) or no"),
    },
    "cockpit": {
        "mode": Key("choice", "bearer", "bearer: certgate hands cockpit-ws a signed assertion checked by "
                    "`certgate cockpit-auth`; basic: pass the Basic credentials (PAM checks the password)",
                    choices=("bearer", "basic")),
        "url_root": Key("str", "/", "cockpit's UrlRoot"),
        "assertion_lifetime": Key("float", 30.0, "seconds a Bearer assertion is valid", 1, 900),
    },
    "joc": {
        "login_path": Key("str", "/joc/api/authentication/login", "JOC's login API path"),
        "logout_path": Key("str", "/joc/api/authentication/logout", "JOC's logout API path: a POST forwarded "
                           "within a certgate session ends that session too"),
        "gui_prefix": Key("str", "/joc/", "JOC's GUI files (GET/HEAD below this prefix, outside /joc/api/) are "
                          "forwarded without a certgate session, so JOC's own login page loads (empty = off)"),
        "prelogin_api": Key("list", ["/joc/api/configuration/login", "/joc/api/iam/identityproviders"],
                            "JOC API paths its login page calls before anyone logs in (POST, no session needed)"),
    },
    "ldap": {
        "url": Key("str", "", "with [trust] mapping = ldap: ldaps://HOST[:PORT], or ldap://HOST[:PORT] with "
                   "starttls = yes"),
        "starttls": Key("bool", False, "upgrade an ldap:// connection with StartTLS before binding"),
        "ca_file": Key("path", None, "CA bundle the directory's certificate must chain to (default: the "
                       "system store); the host name in url must be in its certificate"),
        "unsafe_plaintext": Key("bool", False, "UNSAFE: allow ldap:// without StartTLS (bind password and "
                                "answers in clear)"),
        "bind_dn": Key("str", "", "DN certgate binds as (empty = anonymous)"),
        "bind_password_file": Key("path", None, "file whose first line is the bind password (read at each new "
                                  "directory connection)"),
        "base_dn": Key("str", "", "subtree searched for accounts"),
        "scope": Key("choice", "sub", "sub: the whole subtree; one: direct children of base_dn",
                     choices=("sub", "one")),
        "styles": Key("list", ["certificate", "altsecid", "upn"], "certificate (userCertificate;binary), "
                      "altsecid (altSecurityIdentities), upn (userPrincipalName), email (mail); ORed in one search"),
        "altsecid_forms": Key("list", ["issuer-subject", "issuer-serial", "ski"], "altSecurityIdentities X509 "
                              "forms: issuer-subject, issuer-serial, ski, unsafe-subject, unsafe-rfc822"),
        "certificate_assertion": Key("choice", "der", "der: the certificate's bytes (Active Directory, 389-ds, "
                                     "FreeIPA); serial-issuer: OpenLDAP's certificateExactMatch",
                                     choices=("der", "serial-issuer")),
        "account_attribute": Key("str", "uid", "attribute holding the account (uid, sAMAccountName, ...)"),
        "filter": Key("str", "", "extra LDAP filter ANDed with the lookup, e.g. (objectClass=person)"),
        "timeout": Key("float", 3.0, "seconds for a lookup (connect, TLS, bind, search); then it fails closed",
                       0.1, 60),
        "pool_size": Key("int", 4, "directory connections (and lookup threads) kept", 1, 64),
        "cache_ttl": Key("float", 300.0, "seconds a mapped account is reused without asking (0 = never cache)",
                         0, 86400),
        "negative_cache_ttl": Key("float", 30.0, "seconds a 'no account' answer is reused (0 = never cache)",
                                  0, 3600),
        "cache_size": Key("int", 10000, "certificates whose account is cached", 1, 1000000),
        "negative_cache_size": Key("int", 1000, "certificates whose 'no account' answer is cached", 1, 1000000),
    },
    "admin": {
        "address": Key("str", "127.0.0.1", "admin listener address (health, metrics, sessions)"),
        "port": Key("int", 0, "admin listener port (0 = off)", 0, 65535),
        "token_file": Key("path", None, "file holding a bearer token required by the admin API"),
    },
    "audit": {
        "file": Key("logpath", "-", "JSON-lines audit log path, or - for standard error"),
    },
    "log": {
        "level": Key("choice", "info", "log level", choices=("debug", "info", "warn", "error")),
        "file": Key("logpath", "-", "log file path, or - for standard error"),
        "json_file": Key("logpath", "", "also write the operational log as JSON lines here (empty = off)"),
        "access_file": Key("logpath", "access.log", "access log, one JSON line per request (- = standard "
                           "error, empty = off)"),
    },
}

ROUTE_KEYS = {k: v for k, v in SCHEMA["upstream"].items()} | {
    "prefix": Key("str", None, "path prefix routed to this upstream (longest prefix wins)", required=True),
}
#: Sections handled by trust.settings (``[trust]``) and named sections (``[access:NAME]``,
#: ``[route:NAME]``, ``[account:NAME]``).
PREFIX_SECTIONS = ("access:", "route:", "account:", "ocsp:")
ACCOUNT_KEYS = {"required_auth_methods": SCHEMA["login"]["required_auth_methods"],
                "max_sessions": Key("int", None, "live sessions of this account (overrides [sessions] "
                                    "max_per_account; 0: no limit)", 0, 100000),
                "webauthn_user_verification": Key("choice", None, "this account's WebAuthn user verification "
                                                  "(default: [webauthn] user_verification)",
                                                  choices=("preferred", "required"))}


# --------------------------------------------------------------------------- values

@dataclass(frozen=True)
class UpstreamTLS:
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
class Section:
    """A parsed plain section: attribute access to its values."""

    values: Mapping[str, Any]

    def __getattr__(self, item: str) -> Any:
        try:
            return self.values[item]
        except KeyError:
            raise AttributeError(item) from None


@dataclass(frozen=True)
class Config:
    path: Path
    base_dir: Path
    listen: Section
    trust: Any  # trust.settings.TrustSettings
    access_rules: list[Any]  # trust.access.AccessRule
    routes: list[Route]  # default route last
    headers: Section
    limits: Section
    websocket: Section
    login: Section
    sessions: Section
    cockpit: Section
    joc: Section
    admin: Section
    audit: Section
    log: Section
    account_rules: dict[str, list[list[str]]] = field(default_factory=dict)
    webauthn: Section = field(default_factory=lambda: Section({k: v.default for k, v in SCHEMA["webauthn"].items()}))
    account_uv: dict[str, str] = field(default_factory=dict)
    ldap: Section = field(default_factory=lambda: Section({k: v.default for k, v in SCHEMA["ldap"].items()}))

    @property
    def default_route(self) -> Route:
        return self.routes[-1]

    def route_for(self, path: str) -> Route:
        """The route whose prefix is the longest match of ``path``."""
        for r in self.routes:
            if r.prefix == "/" or path == r.prefix.rstrip("/") or path.startswith(r.prefix):
                return r
        return self.routes[-1]


# --------------------------------------------------------------------------- parsing

_BOOLS = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}
_METHODS = ("tls-cert", "password", "totp", "webauthn")


def _parse_value(section: str, key: str, spec: Key, raw: str, base: Path, problems: list[Problem]) -> Any:
    raw = raw.strip()
    where = (section, key)

    def bad(reason: str) -> Any:
        problems.append(Problem(*where, reason))
        return spec.default

    if spec.kind in ("int", "float"):
        try:
            val: Any = int(raw) if spec.kind == "int" else float(raw)
        except ValueError:
            return bad(f"{raw!r} is not {'an integer' if spec.kind == 'int' else 'a number'}")
        if (spec.lo is not None and val < spec.lo) or (spec.hi is not None and val > spec.hi):
            return bad(f"{raw} is outside {spec.lo:g}..{spec.hi:g}")
        return val
    if spec.kind == "bool":
        if raw.lower() not in _BOOLS:
            return bad(f"{raw!r} is not yes/no")
        return _BOOLS[raw.lower()]
    if spec.kind == "autobool":
        if raw.lower() == "auto":
            return "auto"
        if raw.lower() not in _BOOLS:
            return bad(f"{raw!r} is not auto, yes or no")
        return _BOOLS[raw.lower()]
    if spec.kind == "choice":
        if raw not in spec.choices:
            return bad(f"{raw!r} is not one of {', '.join(spec.choices)}")
        return raw
    if spec.kind == "path":
        if not raw:
            return None
        p = Path(raw)
        return p if p.is_absolute() else (base / p)
    if spec.kind == "logpath":
        return _logpath(raw, base)
    if spec.kind == "list":
        return [x.strip() for x in raw.split(",") if x.strip()]
    if spec.kind == "header":
        if not raw or any(c in raw for c in " \t:\r\n()<>@,;\\\"/[]?={}") or not raw.isascii():
            return bad(f"{raw!r} is not a valid header name")
        return raw
    if spec.kind == "url":
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return bad(f"{raw!r} must be an http:// or https:// URL with a host")
        try:
            parts.port
        except ValueError:
            return bad(f"{raw!r} has an invalid port")
        if parts.query or parts.fragment:
            return bad(f"{raw!r} must not carry a query or fragment")
        return raw
    if spec.kind == "json":
        return _parse_methods(raw, where, problems, spec.default)
    if spec.kind == "maxstartups":
        return _parse_maxstartups(raw, where, problems, spec.default)
    return raw


def _logpath(raw: str, base: Path) -> str:
    """``-`` (standard error) and empty (off) as they are; a relative path from the config's folder."""
    if raw in ("-", ""):
        return raw
    p = Path(raw)
    return str(p if p.is_absolute() else base / p)


def _parse_methods(raw: str, where: tuple[str, str], problems: list[Problem], default: Any) -> Any:
    try:
        val = json.loads(raw)
    except ValueError as e:
        problems.append(Problem(*where, f"not valid JSON ({e.msg} at column {e.colno})"))
        return default
    if not isinstance(val, list) or not val or not all(isinstance(r, list) and r for r in val):
        problems.append(Problem(*where, "must be a non-empty list of non-empty lists of method names"))
        return default
    for rule in val:
        for m in rule:
            if m not in _METHODS:
                problems.append(Problem(*where, f"unknown method {m!r} (known: {', '.join(_METHODS)})"))
                return default
        if len(set(rule)) != len(rule):
            problems.append(Problem(*where, f"method repeated in {rule}"))
            return default
        if "tls-cert" not in rule:
            problems.append(Problem(*where, f"rule {rule} lacks tls-cert: certgate always requires the "
                                    "certificate"))
            return default
    return val


def _parse_maxstartups(raw: str, where: tuple[str, str], problems: list[Problem], default: Any) -> Any:
    parts = raw.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        problems.append(Problem(*where, f"{raw!r} is not N or start:rate:full"))
        return default
    if len(nums) == 1 and nums[0] >= 1:
        return (nums[0], 100, nums[0])
    if len(nums) == 3 and 1 <= nums[0] <= nums[2] and 0 <= nums[1] <= 100:
        return tuple(nums)
    problems.append(Problem(*where, f"{raw!r} is not N or start:rate:full with start <= full, rate 0..100"))
    return default


def _section(parser: configparser.ConfigParser, name: str, schema: Mapping[str, Key], base: Path,
             problems: list[Problem], present: bool = True) -> dict[str, Any]:
    values: dict[str, Any] = {}
    raw = dict(parser[name]) if present and parser.has_section(name) else {}
    for key in raw:
        if key not in schema:
            problems.append(Problem(name, key, "unknown key"))
    for key, spec in schema.items():
        if key in raw:
            values[key] = _parse_value(name, key, spec, raw[key], base, problems)
        else:
            if spec.required:
                problems.append(Problem(name, key, "is required"))
            d = spec.default
            if spec.kind == "path" and isinstance(d, str):
                d = base / d
            elif spec.kind == "logpath":
                d = _logpath(d, base)
            values[key] = d
    return values


def _route(name: str, values: Mapping[str, Any], prefix: str) -> Route:
    url = values["url"] or "http://127.0.0.1:9"
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    tls = None
    if scheme == "https":
        tls = UpstreamTLS(values["tls_server_name"] or (parts.hostname or ""), values["tls_ca"],
                          values["tls_client_certificate"], values["tls_client_key"],
                          values["unsafe_skip_verify"])
    return Route(name=name, prefix=prefix, url=url, scheme=scheme, host=parts.hostname or "127.0.0.1",
                 port=parts.port or (443 if scheme == "https" else 80), base_path=parts.path.rstrip("/"),
                 kind=values["kind"], connect_timeout=values["connect_timeout"],
                 read_timeout=values["read_timeout"], max_idle=values["max_idle"],
                 max_connections=values["max_connections"], tls=tls,
                 unsafe_forward_raw_target=values["unsafe_forward_raw_target"])


def _check_files(cfg_values: Mapping[str, Mapping[str, Any]], problems: list[Problem]) -> None:
    for sec, key in (("listen", "certificate"), ("listen", "key")):
        p = cfg_values[sec].get(key)
        if p is not None and not Path(p).is_file():
            problems.append(Problem(sec, key, f"{p} does not exist or is not a file"))


def parse_config(text: str, path: Path) -> Config:
    """Parse config ``text`` (read from ``path``); raise ConfigError with every problem."""
    from dataclasses import replace

    from trust.settings import parse_access_sections, parse_ocsp_sections, parse_trust_section

    base = path.resolve().parent
    problems: list[Problem] = []
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as e:
        raise ConfigError([Problem("config", None, f"{path}: {e}".replace("\n", " "))]) from None

    known = set(SCHEMA) | {"trust"}
    for sec in parser.sections():
        if sec not in known and not sec.startswith(PREFIX_SECTIONS):
            problems.append(Problem(sec, None, "unknown section"))

    vals = {name: _section(parser, name, schema, base, problems) for name, schema in SCHEMA.items()}
    if not parser.has_section("trust"):
        problems.append(Problem("trust", "store", "is required"))
        trust_values: Mapping[str, str] = {}
    else:
        trust_values = dict(parser["trust"])
    trust_settings, tprobs = parse_trust_section(trust_values, base)
    problems += [p for p in tprobs if not (not parser.has_section("trust") and p.key == "store")]

    access_secs = {s.split(":", 1)[1]: dict(parser[s]) for s in parser.sections() if s.startswith("access:")}
    rules, aprobs = parse_access_sections(access_secs)
    problems += aprobs
    ocsp_secs = {s.split(":", 1)[1]: dict(parser[s]) for s in parser.sections() if s.startswith("ocsp:")}
    if ocsp_secs:
        ocsp_rules, oprobs = parse_ocsp_sections(ocsp_secs, trust_settings.ocsp.nonce)
        problems += oprobs
        trust_settings = replace(trust_settings, ocsp=replace(trust_settings.ocsp, rules=ocsp_rules))

    routes: list[Route] = []
    for sec in parser.sections():
        if sec.startswith("route:"):
            rv = _section(parser, sec, ROUTE_KEYS, base, problems)
            prefix = rv.get("prefix") or "/"
            if not str(prefix).startswith("/"):
                problems.append(Problem(sec, "prefix", f"{prefix!r} must start with /"))
            else:
                _check_canonical(sec, "prefix", str(prefix), problems)
            routes.append(_route(sec.split(":", 1)[1], rv, prefix))
    routes.sort(key=lambda r: len(r.prefix), reverse=True)
    routes.append(_route("default", vals["upstream"], "/"))

    account_rules: dict[str, list[list[str]]] = {}
    account_limits: dict[str, int] = {}
    account_uv: dict[str, str] = {}
    for sec in parser.sections():
        if sec.startswith("account:"):
            raw_keys = set(parser[sec])
            av = _section(parser, sec, ACCOUNT_KEYS, base, problems)
            name = sec.split(":", 1)[1]
            # a section that only sets a limit or the WebAuthn verification keeps the global rules
            if "required_auth_methods" in raw_keys or not raw_keys & {"max_sessions", "webauthn_user_verification"}:
                account_rules[name] = av["required_auth_methods"]
            if av.get("max_sessions") is not None:
                account_limits[name] = int(av["max_sessions"])
            if av["webauthn_user_verification"]:
                account_uv[name] = av["webauthn_user_verification"]
    vals["sessions"]["account_limits"] = account_limits
    _validate_webauthn(vals, [vals["login"]["required_auth_methods"], *account_rules.values()], problems)

    _validate_cross(vals, problems)
    validate_presence(vals, [r.kind for r in routes], problems)
    ocsp = trust_settings.ocsp
    if ocsp.enabled and ocsp.timeout >= vals["listen"]["handshake_timeout"]:
        problems.append(Problem("trust", "ocsp_timeout", f"{ocsp.timeout:g} must be below [listen] handshake_timeout "
                                f"({vals['listen']['handshake_timeout']:g}): the handshake deadline would close "
                                "connections before the OCSP deadline decides"))
    if trust_settings.mapping.rule == "ldap":
        from trust.directory import ldap_problems

        problems += ldap_problems(vals["ldap"])
    _check_files(vals, problems)
    if problems:
        raise ConfigError(problems)
    return Config(path=path, base_dir=base, listen=Section(vals["listen"]), trust=trust_settings,
                  access_rules=rules, routes=routes, headers=Section(vals["headers"]),
                  limits=Section(vals["limits"]), websocket=Section(vals["websocket"]),
                  login=Section(vals["login"]), sessions=Section(vals["sessions"]),
                  cockpit=Section(vals["cockpit"]), joc=Section(vals["joc"]), admin=Section(vals["admin"]),
                  audit=Section(vals["audit"]), log=Section(vals["log"]), account_rules=account_rules,
                  webauthn=Section(vals["webauthn"]), account_uv=account_uv, ldap=Section(vals["ldap"]))


def _check_canonical(section: str, key: str, path: str, problems: list[Problem]) -> None:
    """Paths certgate compares with request paths must be canonical (``proxy.http.paths``) themselves."""
    from proxy.http.paths import TargetError, canonical_path

    try:
        canon = canonical_path(path.encode("utf-8")).decode("ascii")
    except TargetError as e:
        problems.append(Problem(section, key, f"{path!r} is not a usable path: {e.reason}"))
        return
    if canon != path:
        problems.append(Problem(section, key, f"{path!r} is not canonical; write {canon!r} (see docs/forwarding.md)"))


def _validate_cross(vals: Mapping[str, Mapping[str, Any]], problems: list[Problem]) -> None:
    _check_canonical("joc", "login_path", str(vals["joc"]["login_path"]), problems)
    root = "/" + str(vals["cockpit"]["url_root"]).strip().strip("/")
    _check_canonical("cockpit", "url_root", root, problems)
    try:
        ipaddress.ip_address(vals["listen"]["address"])
    except ValueError:
        problems.append(Problem("listen", "address", f"{vals['listen']['address']!r} is not an IP address"))
    name = vals["sessions"]["cookie_name"]
    if not str(name).startswith("__Host-"):
        problems.append(Problem("sessions", "cookie_name", f"{name!r} must start with __Host- (the cookie is "
                                "then bound to this host, Secure and Path=/)"))
    store = vals["sessions"]["store"]
    if not (store == "memory" or store.startswith("sqlite:")
            or store.startswith(("redis://", "rediss://", "redis+sentinel://"))):
        problems.append(Problem("sessions", "store", f"{store!r} is not memory, sqlite:PATH, redis://, rediss:// "
                                "or redis+sentinel://..."))
    if vals["login"]["password"] == "file":
        if not vals["login"]["password_file"]:
            problems.append(Problem("login", "password_file", "is required when password = file"))


def _validate_webauthn(vals: Mapping[str, Mapping[str, Any]], rule_sets: list[Any], problems: list[Problem]) -> None:
    """A rule naming webauthn needs rp_id (a host name), origin (https, that host) and credentials."""
    w = vals["webauthn"]
    if not any("webauthn" in r for rules in rule_sets if isinstance(rules, list) for r in rules
               if isinstance(r, list)):
        return
    rp, origin = str(w["rp_id"]).strip().lower(), str(w["origin"]).strip()
    if not rp:
        problems.append(Problem("webauthn", "rp_id", "is required when a rule names webauthn"))
    else:
        try:
            ipaddress.ip_address(rp.strip("[]"))
            problems.append(Problem("webauthn", "rp_id", f"{rp!r} is an IP address; WebAuthn needs a host name"))
        except ValueError:
            pass
    parts = urlsplit(origin)
    if not origin:
        problems.append(Problem("webauthn", "origin", "is required when a rule names webauthn"))
    elif parts.scheme != "https" or not parts.hostname or parts.path or parts.query or parts.fragment:
        problems.append(Problem("webauthn", "origin", f"{origin!r} must be https://HOST[:PORT], nothing more"))
    elif rp and not (parts.hostname == rp or parts.hostname.endswith("." + rp)):
        problems.append(Problem("webauthn", "origin", f"{origin!r} is not on the relying party {rp!r} (or a "
                                "subdomain of it)"))
    if not w["credentials"]:
        problems.append(Problem("webauthn", "credentials", "is required when a rule names webauthn"))


def load_config(path: str | Path) -> Config:
    """Read and parse the config file at ``path``; raise ConfigError with every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([Problem("config", None, f"cannot read {p}: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([Problem("config", None, f"{p} is not UTF-8 (byte {e.start})")]) from None
    return parse_config(text, p)


def documented_keys() -> dict[str, list[str]]:
    """Every section and key of the schema (for documentation checks)."""
    out = {s: list(keys) for s, keys in SCHEMA.items()}
    return out


KeyParser = Callable[[str], Any]
