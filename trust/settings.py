"""The ``[trust]`` and ``[access:NAME]`` configuration sections -> settings + problems.

Parsers never raise for bad values: they return usable defaults together with a list of
:class:`~trust.problems.Problem` (section, key, reason) and let the caller decide.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping
from urllib.parse import urlsplit

from . import certinfo
from .access import AccessRule, IPNetwork
from .mapping import MapFileError, MappingSettings, account_problem, load_map_file
from .ocsp import OcspRule, OcspSettings
from .problems import Problem
from .verify import VerifyPolicy

if TYPE_CHECKING:
    from .store import TrustGeneration

SECTION = "trust"
_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}
TRUST_KEYS = ("store", "reload_interval", "crl", "max_depth", "min_rsa_bits", "unsafe_allow_missing_eku",
              "expiry_warning_days", "mapping", "mapping_strip_domain", "mapping_regex", "mapping_file",
              "ocsp", "ocsp_timeout", "ocsp_clock_skew", "ocsp_max_age", "ocsp_cache_size", "ocsp_nonce")
ACCESS_KEYS = ("cas", "cns", "ip_ranges")
OCSP_KEYS = ("cas", "mode", "responder", "nonce")


@dataclass(frozen=True)
class TrustSettings:
    """The ``[trust]`` section. Ranges: see ``docs/trust.md`` "Configuration keys"."""

    store: Path
    reload_interval: float = 2.0
    crl: Literal["hard", "soft", "off"] = "hard"
    max_depth: int = 4
    min_rsa_bits: int = 2048
    unsafe_allow_missing_eku: bool = False
    expiry_warning_days: int = 14
    mapping: MappingSettings = field(default_factory=MappingSettings)
    ocsp: OcspSettings = field(default_factory=OcspSettings)

    @property
    def policy(self) -> VerifyPolicy:
        """The verification policy these settings ask for."""
        return VerifyPolicy(max_depth=self.max_depth, min_rsa_bits=self.min_rsa_bits, crl=self.crl,
                            unsafe_allow_missing_eku=self.unsafe_allow_missing_eku)


def parse_bool(text: str) -> bool | None:
    """yes/no/true/false/on/off/1/0 (any case) -> bool, else None."""
    t = text.strip().lower()
    return True if t in _TRUE else False if t in _FALSE else None


def _number(values: Mapping[str, str], key: str, kind: type, lo: float, hi: float, default: float,
            problems: list[Problem]) -> float:
    raw = values.get(key)
    if raw is None:
        return default
    try:
        value: float = kind(raw.strip())
    except ValueError:
        problems.append(Problem(SECTION, key, f"{raw!r} is not {'an integer' if kind is int else 'a number'}"))
        return default
    if not lo <= value <= hi or value != value:
        problems.append(Problem(SECTION, key, f"{raw.strip()} is outside the range {lo:g}..{hi:g}"))
        return default
    return value


def _choice(values: Mapping[str, str], key: str, choices: tuple[str, ...], default: str,
            problems: list[Problem]) -> str:
    raw = values.get(key)
    if raw is None:
        return default
    v = raw.strip()
    if v not in choices:
        problems.append(Problem(SECTION, key, f"{v!r} is not one of {', '.join(choices)}"))
        return default
    return v


def _flag(values: Mapping[str, str], key: str, problems: list[Problem], default: bool = False,
          section: str = SECTION) -> bool:
    raw = values.get(key)
    if raw is None:
        return default
    v = parse_bool(raw)
    if v is None:
        problems.append(Problem(section, key, f"{raw.strip()!r} is not a boolean (yes/no, true/false, on/off, 1/0)"))
        return default
    return v


def _path(raw: str, base_dir: Path) -> Path:
    p = Path(raw.strip()).expanduser()
    return p if p.is_absolute() else base_dir / p


def parse_trust_section(values: Mapping[str, str], base_dir: Path) -> tuple[TrustSettings, list[Problem]]:
    """Parse ``[trust]``; relative paths are relative to ``base_dir`` (the config's folder).

    Checks types, ranges, choices, unknown keys, the regex (compiles, exactly one
    group) and the map file (readable, every line valid). Does not load the store.
    """
    problems: list[Problem] = []
    for key in values:
        if key not in TRUST_KEYS:
            problems.append(Problem(SECTION, key, f"unknown key (known: {', '.join(TRUST_KEYS)})"))
    raw_store = values.get("store", "").strip()
    if not raw_store:
        problems.append(Problem(SECTION, "store", "required: the trust store folder"))
        store = base_dir / "trust"
    else:
        store = _path(raw_store, base_dir)
    reload_interval = float(_number(values, "reload_interval", float, 0, 3600, 2.0, problems))
    crl = _choice(values, "crl", ("hard", "soft", "off"), "hard", problems)
    max_depth = int(_number(values, "max_depth", int, 1, 16, 4, problems))
    min_rsa_bits = int(_number(values, "min_rsa_bits", int, 2048, 16384, 2048, problems))
    unsafe_eku = _flag(values, "unsafe_allow_missing_eku", problems)
    warn_days = int(_number(values, "expiry_warning_days", int, 0, 3650, 14, problems))
    mapping = _parse_mapping(values, base_dir, problems)
    ocsp_settings = OcspSettings(
        mode=_choice(values, "ocsp", ("hard", "soft", "off"), "off", problems),  # type: ignore[arg-type]
        timeout=float(_number(values, "ocsp_timeout", float, 0.1, 60, 3.0, problems)),
        clock_skew=float(_number(values, "ocsp_clock_skew", float, 0, 3600, 300.0, problems)),
        max_age=float(_number(values, "ocsp_max_age", float, 10, 7 * 86400, 3600.0, problems)),
        cache_size=int(_number(values, "ocsp_cache_size", int, 1, 10_000_000, 10000, problems)),
        nonce=_flag(values, "ocsp_nonce", problems, default=True))
    settings = TrustSettings(store=store, reload_interval=reload_interval, crl=crl,  # type: ignore[arg-type]
                             max_depth=max_depth, min_rsa_bits=min_rsa_bits, unsafe_allow_missing_eku=unsafe_eku,
                             expiry_warning_days=warn_days, mapping=mapping, ocsp=ocsp_settings)
    return settings, problems


def parse_ocsp_sections(sections: Mapping[str, Mapping[str, str]], default_nonce: bool = True
                        ) -> tuple[tuple[OcspRule, ...], list[Problem]]:
    """Parse ``[ocsp:NAME]`` sections (keys of ``sections`` are the NAMEs) into rules.

    ``cas`` (required): SHA-256 fingerprints or store file names, as in ``[access:NAME]``;
    ``mode``: hard (default), soft, off; ``responder``: an http(s) URL with a host (default:
    the certificate's AIA); ``nonce``: boolean (default ``default_nonce``). A CA named by
    two rules is a problem. Does not check that the CAs exist in the store.
    """
    rules: list[OcspRule] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for name, values in sections.items():
        section = f"ocsp:{name}"
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            problems.append(Problem(section, None, "rule names use letters, digits, '_', '.', '-'"))
        for key in values:
            if key not in OCSP_KEYS:
                problems.append(Problem(section, key, f"unknown key (known: {', '.join(OCSP_KEYS)})"))
        cas: list[str] = []
        for item in _split(values.get("cas")):
            fp = certinfo.normalize_fingerprint(item)
            if fp is None and (item.startswith("/") or ".." in item.split("/")):
                problems.append(Problem(section, "cas", f"{item!r} is neither a SHA-256 fingerprint nor a "
                                                        "file name inside the trust store"))
                continue
            ca = fp or item
            if ca in seen:
                problems.append(Problem(section, "cas", f"{item!r} is already named by [ocsp:{seen[ca]}]"))
            seen[ca] = name
            cas.append(ca)
        if not cas:
            problems.append(Problem(section, "cas", "required: the CA(s) this rule applies to"))
        raw_mode = (values.get("mode") or "hard").strip()
        if raw_mode not in ("hard", "soft", "off"):
            problems.append(Problem(section, "mode", f"{raw_mode!r} is not one of hard, soft, off"))
            raw_mode = "hard"
        responder = (values.get("responder") or "").strip() or None
        if responder is not None:
            parts = urlsplit(responder)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
                problems.append(Problem(section, "responder", f"{responder!r} must be an http:// or https:// URL "
                                                              "with a host"))
                responder = None
        nonce = _flag(values, "nonce", problems, default=default_nonce, section=section)
        rules.append(OcspRule(name=name, cas=tuple(cas), mode=raw_mode, responder=responder,  # type: ignore[arg-type]
                              nonce=nonce))
    return tuple(rules), problems


def _parse_mapping(values: Mapping[str, str], base_dir: Path, problems: list[Problem]) -> MappingSettings:
    rule = _choice(values, "mapping", ("cn", "san-email", "san-upn", "regex", "file", "ldap"), "cn", problems)
    strip = _flag(values, "mapping_strip_domain", problems)
    regex = values.get("mapping_regex")
    regex = regex.strip() if regex is not None and regex.strip() else None
    map_path = values.get("mapping_file")
    map_file = _path(map_path, base_dir) if map_path and map_path.strip() else None
    if regex is not None:
        try:
            groups = re.compile(regex).groups
        except re.error as exc:
            problems.append(Problem(SECTION, "mapping_regex", f"{regex!r} is not a valid regular expression: {exc}"))
        else:
            if groups != 1:
                problems.append(Problem(SECTION, "mapping_regex",
                                        f"{regex!r} has {groups} capture groups; exactly one is required"))
    if rule == "regex" and regex is None:
        problems.append(Problem(SECTION, "mapping_regex", "required when mapping = regex"))
    if rule == "file":
        if map_file is None:
            problems.append(Problem(SECTION, "mapping_file", "required when mapping = file"))
        else:
            try:
                load_map_file(map_file)
            except MapFileError as exc:
                problems.append(Problem(SECTION, "mapping_file", str(exc)))
    if strip and rule in ("san-email", "san-upn"):
        problems.append(Problem(SECTION, "mapping_strip_domain",
                                f"cannot be used with mapping = {rule}: the mapped account keeps its @domain, "
                                "so a stripped login name would never match"))
    return MappingSettings(rule=rule, strip_domain=strip, regex=regex, map_file=map_file)  # type: ignore[arg-type]


def _split(raw: str | None) -> list[str]:
    return [p.strip() for p in (raw or "").split(",") if p.strip()]


def parse_access_sections(sections: Mapping[str, Mapping[str, str]],
                          generation_hint: TrustGeneration | None = None
                          ) -> tuple[list[AccessRule], list[Problem]]:
    """Parse ``[access:NAME]`` sections (keys of ``sections`` are the NAMEs).

    ``cas`` entries are SHA-256 fingerprints (any case, colons allowed) or store file
    names; with ``generation_hint`` each must name a CA or pinned entry of that store.
    ``cns`` are exact accounts (printable ASCII). ``ip_ranges`` are IPv4/IPv6 networks or
    addresses; a network with host bits set is a problem. A rule needs a criterion.
    """
    rules: list[AccessRule] = []
    problems: list[Problem] = []
    for name, values in sections.items():
        section = f"access:{name}"
        before = len(problems)
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            problems.append(Problem(section, None, "rule names use letters, digits, '_', '.', '-'"))
        for key in values:
            if key not in ACCESS_KEYS:
                problems.append(Problem(section, key, f"unknown key (known: {', '.join(ACCESS_KEYS)})"))
        cas: list[str] = []
        for item in _split(values.get("cas")):
            fp = certinfo.normalize_fingerprint(item)
            if fp is not None:
                cas.append(fp)
            elif item.startswith("/") or ".." in item.split("/"):
                problems.append(Problem(section, "cas", f"{item!r} is neither a SHA-256 fingerprint nor a "
                                                        "file name inside the trust store"))
                continue
            else:
                cas.append(item)
            if generation_hint is not None:
                known = {e.file for e in generation_hint.entries if e.kind != "CRL"} | {
                    e.fingerprint for e in generation_hint.entries if e.kind != "CRL"}
                if cas[-1] not in known:
                    problems.append(Problem(section, "cas", f"{item!r} is not a CA or pinned certificate of the "
                                                            "trust store"))
        cns: list[str] = []
        for item in _split(values.get("cns")):
            problem = account_problem(item, "the CN")
            if problem:
                problems.append(Problem(section, "cns", f"{item!r}: {problem}"))
            else:
                cns.append(item)
        nets: list[IPNetwork] = []
        for item in _split(values.get("ip_ranges")):
            try:
                nets.append(ipaddress.ip_network(item, strict=True))
            except ValueError as exc:
                problems.append(Problem(section, "ip_ranges", f"{item!r} is not an IP network: {exc}"))
        if not any(_split(values.get(k)) for k in ACCESS_KEYS):
            problems.append(Problem(section, None, "a rule needs at least one of cas, cns, ip_ranges"))
        rules.append(AccessRule(name=name, cas=tuple(cas), cns=tuple(cns), ip_ranges=tuple(nets),
                                broken=len(problems) > before))
    return rules, problems
