"""INI text -> :class:`~proxy.config.values.Config`, reporting every problem (section, key, reason).

Relative paths are relative to the config file's folder.
"""

from __future__ import annotations

import configparser
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from proxy.config.checks import check_canonical, check_cross, check_files, check_webauthn
from proxy.config.keys import Key
from proxy.config.sections import (ACCOUNT_KEYS, PREFIX_SECTIONS, ROUTE_KEYS, SCHEMA, AdminSection, AuditSection,
                                   CockpitSection, HeadersSection, JocSection, LdapSection, LimitsSection,
                                   ListenSection, LogSection, LoginSection, SessionsSection, WebauthnSection,
                                   WebsocketSection)
from proxy.config.values import Config, Route, UpstreamTLS
from proxy.config.presence import validate_presence
from trust.access import AccessRule
from trust.problems import Problem
from trust.settings import TrustSettings, parse_access_sections, parse_ocsp_sections, parse_trust_section


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


_BOOLS = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}
_METHODS = ("tls-cert", "password", "totp", "webauthn")


def parse_value(section: str, key: str, spec: Key, raw: str, base: Path, problems: list[Problem]) -> Any:
    """The value of one key's text; on a problem, record it and return the key's default."""
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
        msg, col = (e.msg, e.colno) if isinstance(e, json.JSONDecodeError) else (str(e), 0)
        problems.append(Problem(*where, f"not valid JSON ({msg} at column {col})"))
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
            values[key] = parse_value(name, key, spec, raw[key], base, problems)
        else:
            if spec.required:
                problems.append(Problem(name, key, "is required"))
            d = spec.default
            if isinstance(d, list):
                d = [list(x) if isinstance(x, list) else x for x in d]
            if spec.kind == "path" and isinstance(d, str):
                d = base / d
            elif spec.kind == "logpath":
                d = _logpath(d, base)
            values[key] = d
    return values


def route_from_values(name: str, values: Mapping[str, Any], prefix: str) -> Route:
    """A :class:`Route` from the parsed keys of ``[upstream]`` or a ``[route:NAME]``."""
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


def build_config(vals: Mapping[str, Mapping[str, Any]], *, path: Path, base_dir: Path, trust: TrustSettings,
                 routes: list[Route], access_rules: list[AccessRule] | None = None,
                 account_rules: Mapping[str, list[list[str]]] | None = None,
                 account_uv: Mapping[str, str] | None = None) -> Config:
    """A :class:`Config` from already parsed section values (every key of every section present).

    Does not validate: :func:`parse_config` does that before calling it. A key missing from
    ``vals`` or one the section does not have is a ``TypeError``.
    """
    return Config(path=path, base_dir=base_dir, listen=ListenSection(**vals["listen"]), trust=trust,
                  access_rules=list(access_rules or []), routes=routes, headers=HeadersSection(**vals["headers"]),
                  limits=LimitsSection(**vals["limits"]), websocket=WebsocketSection(**vals["websocket"]),
                  login=LoginSection(**vals["login"]), sessions=SessionsSection(**vals["sessions"]),
                  cockpit=CockpitSection(**vals["cockpit"]), joc=JocSection(**vals["joc"]),
                  admin=AdminSection(**vals["admin"]), audit=AuditSection(**vals["audit"]),
                  log=LogSection(**vals["log"]), account_rules=dict(account_rules or {}),
                  webauthn=WebauthnSection(**vals["webauthn"]), account_uv=dict(account_uv or {}),
                  ldap=LdapSection(**vals["ldap"]))


def parse_config(text: str, path: Path) -> Config:
    """Parse config ``text`` (read from ``path``); raise ConfigError with every problem."""
    base = path.resolve().parent
    problems: list[Problem] = []
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # typeshed: a method, not an attribute
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
                check_canonical(sec, "prefix", str(prefix), problems)
            routes.append(route_from_values(sec.split(":", 1)[1], rv, prefix))
    routes.sort(key=lambda r: len(r.prefix), reverse=True)
    routes.append(route_from_values("default", vals["upstream"], "/"))

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
    check_webauthn(vals, [vals["login"]["required_auth_methods"], *account_rules.values()], problems)

    check_cross(vals, problems)
    validate_presence(vals, [r.kind for r in routes], problems)
    ocsp = trust_settings.ocsp
    if ocsp.enabled and ocsp.timeout >= vals["listen"]["handshake_timeout"]:
        problems.append(Problem("trust", "ocsp_timeout", f"{ocsp.timeout:g} must be below [listen] handshake_timeout "
                                f"({vals['listen']['handshake_timeout']:g}): the handshake deadline would close "
                                "connections before the OCSP deadline decides"))
    if trust_settings.mapping.rule == "ldap":
        from trust.directory import ldap_problems

        problems += ldap_problems(vals["ldap"])
    check_files(vals, problems)
    if problems:
        raise ConfigError(problems)
    return build_config(vals, path=path, base_dir=base, trust=trust_settings, routes=routes, access_rules=rules,
                        account_rules=account_rules, account_uv=account_uv)


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
