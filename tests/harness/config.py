"""Config builders: a certgate config file for a real gateway, or a Config value in memory.

- :func:`write_config`: ``certgate.conf`` for a :class:`~tests.harness.pki.Pki` and an upstream,
  with per-section overrides (what ``certgate run`` reads in black-box and browser tests).
- :func:`render`: INI text from sections (the one place that spells the file format).
- :func:`listener_config`: a parsed and checked Config for the TLS listener's unit tests.
- :func:`make_config`: a Config with schema defaults built in memory (no files) for unit
  tests; :func:`engine_config` is its form for the HTTP engine's tests.

Values are written with ``str()``; nothing here checks them: the product's parser does.
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from tests.harness.pki import Pki
from tests.harness.wait import free_port

if TYPE_CHECKING:
    from proxy.config import Config


def render(sections: Mapping[str, Mapping[str, object]]) -> str:
    """INI text: ``[section]`` then ``key = value`` lines, a blank line after each section."""
    return "".join(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n"
                   for sec, kv in sections.items())


def overlay(base: Mapping[str, Mapping[str, object]], extra: Mapping[str, Mapping[str, object]] | None
            ) -> dict[str, dict[str, object]]:
    """``base`` with the keys of ``extra`` added or replaced, section by section (a new dict)."""
    out = {sec: dict(kv) for sec, kv in base.items()}
    for sec, kv in (extra or {}).items():
        out.setdefault(sec, {}).update(kv)
    return out


def write_config(folder: Path, pki: Pki, *, upstream: str, port: int | None = None,
                 extra: Mapping[str, Mapping[str, object]] | None = None, raw: str = "") -> Path:
    """Write ``folder/certgate.conf`` for ``pki`` forwarding to ``upstream``; returns its path.

    The gateway listens on 127.0.0.1:``port`` (a free port by default), needs a client
    certificate, reloads the trust store every 0.5 s and keeps sessions in memory.

    ``extra`` adds or overrides keys per section (``{"listen": {"client_auth": "want"}}``);
    ``raw`` is appended verbatim (e.g. ``[route:x]`` sections).
    """
    sections = overlay({
        "listen": {"address": "127.0.0.1", "port": port or free_port(), "certificate": str(pki.server_cert),
                   "key": str(pki.server_key), "client_auth": "need", "handshake_timeout": 5},
        "trust": {"store": str(pki.store), "reload_interval": 0.5},
        "upstream": {"url": upstream, "connect_timeout": 2, "read_timeout": 10},
        "sessions": {"store": "memory"},
        "log": {"level": "info"},
    }, extra)
    path = Path(folder) / "certgate.conf"
    path.write_text(render(sections) + raw)
    return path


def config_port(path: Path) -> int:
    """``[listen] port`` of the config file at ``path``."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(path)
    return cp.getint("listen", "port")


def listener_config(pki: Pki, *, client_auth: str = "need", min_version: str = "1.2",
                sni: Sequence[str] = (), trust: str = "", listen: str = "") -> Config:
    """A :class:`proxy.config.Config` for ``pki``'s listener, parsed (and checked) from the INI text
    it also writes to ``pki.folder/certgate.conf``; ``trust`` and ``listen`` add raw lines."""
    from proxy.config import parse_config

    text = (f"[listen]\ncertificate = {pki.server_cert}\nkey = {pki.server_key}\n"
            f"client_auth = {client_auth}\ntls_min_version = {min_version}\n"
            + (f"sni_certificates = {', '.join(sni)}\n" if sni else "") + listen
            + f"\n[trust]\nstore = {pki.store}\n{trust}\n[upstream]\nurl = http://127.0.0.1:9\n")
    path = pki.folder / "certgate.conf"
    path.write_text(text)
    return parse_config(text, path)


def make_config(sections: Mapping[str, Mapping[str, Any]] | None = None, *,
                routes: Sequence[Mapping[str, Any]] | None = None,
                account_rules: Mapping[str, list[list[str]]] | None = None, access_rules: list[Any] | None = None,
                account_uv: Mapping[str, str] | None = None, base_dir: Path | str = "/nonexistent") -> Config:
    """A ``proxy.config.Config`` from the schema defaults, with ``sections`` overriding values.

    Example: ``make_config({"login": {"required_auth_methods": [["tls-cert", "password"]]}})``.
    ``routes`` adds ``[route:NAME]`` entries (dicts with ``name``, ``prefix``, ``url`` and any
    upstream key); ``[upstream] url`` defaults to a closed port. Built in memory: values are
    taken as already parsed, no file is read and none of the config's checks runs.
    """
    from proxy.config import ROUTE_KEYS, SCHEMA, build_config, default_values, route_from_values
    from proxy.config.presence import derive_defaults
    from trust.settings import TrustSettings

    base = Path(base_dir)
    vals: dict[str, dict[str, Any]] = {}
    for sec in SCHEMA:
        vals[sec] = default_values(sec)
        vals[sec].update((sections or {}).get(sec, {}))
    if vals["upstream"]["url"] is None:
        vals["upstream"]["url"] = "http://127.0.0.1:9"
    derive_defaults(vals)
    rts = []
    for r in routes or []:
        rv = {k: spec.default for k, spec in ROUTE_KEYS.items()}
        rv.update({k: v for k, v in r.items() if k != "name"})
        rts.append(route_from_values(r["name"], rv, r["prefix"]))
    rts.sort(key=lambda r: len(r.prefix), reverse=True)
    rts.append(route_from_values("default", vals["upstream"], "/"))
    return build_config(vals, path=base / "certgate.conf", base_dir=base, trust=TrustSettings(store=base / "trust"),
                        routes=rts, access_rules=list(access_rules or []), account_rules=account_rules,
                        account_uv=account_uv)


def engine_config(upstream_url: str, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                  routes: Sequence[Mapping[str, Any]] | None = None, base_dir: Path | None = None) -> Config:
    """:func:`make_config` for the HTTP engine: ``[upstream] url`` is ``upstream_url`` (unless
    ``overrides`` names another), files relative to ``base_dir`` (default /tmp)."""
    sections = {sec: dict(kv) for sec, kv in (overrides or {}).items()}
    sections["upstream"] = {"url": upstream_url, **sections.get("upstream", {})}
    return make_config(sections, routes=routes, base_dir=base_dir or Path("/tmp"))
