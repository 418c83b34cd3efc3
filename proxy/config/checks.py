"""Checks across keys of the parsed sections (still raw dicts): each adds :class:`Problem` s."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from trust.problems import Problem

#: Parsed section values by section name, before they become typed sections.
Values = Mapping[str, Mapping[str, Any]]


def check_canonical(section: str, key: str, path: str, problems: list[Problem]) -> None:
    """Paths certgate compares with request paths must be canonical (``proxy.paths``) themselves."""
    from proxy.paths import TargetError, canonical_path

    try:
        canon = canonical_path(path.encode("utf-8")).decode("ascii")
    except TargetError as e:
        problems.append(Problem(section, key, f"{path!r} is not a usable path: {e.reason}"))
        return
    if canon != path:
        problems.append(Problem(section, key, f"{path!r} is not canonical; write {canon!r} (see docs/forwarding.md)"))


def check_files(vals: Values, problems: list[Problem]) -> None:
    """The listener's certificate and key exist (they are read only when the gateway starts)."""
    for sec, key in (("listen", "certificate"), ("listen", "key")):
        p = vals[sec].get(key)
        if p is not None and not Path(p).is_file():
            problems.append(Problem(sec, key, f"{p} does not exist or is not a file"))


def check_cross(vals: Values, problems: list[Problem]) -> None:
    """Paths canonical, the listen address an IP, the cookie a ``__Host-`` one, a known store."""
    check_canonical("joc", "login_path", str(vals["joc"]["login_path"]), problems)
    root = "/" + str(vals["cockpit"]["url_root"]).strip().strip("/")
    check_canonical("cockpit", "url_root", root, problems)
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


def check_webauthn(vals: Values, rule_sets: list[Any], problems: list[Problem]) -> None:
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
