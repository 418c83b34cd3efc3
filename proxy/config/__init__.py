"""certgate's INI configuration: parse, validate, and report every problem.

``load_config(path)`` returns a :class:`Config` or raises :class:`ConfigError` carrying
*all* problems found (section, key, reason), so ``certgate check-config`` can print them
in one go. Relative paths are relative to the config file's folder.

- :mod:`proxy.config.keys` — :class:`Key`: how one key is parsed, its default and its doc;
- :mod:`proxy.config.sections` — every section as a typed frozen dataclass whose fields are
  its keys (the public contract; ``conf/certgate.conf`` documents every key, a test checks
  both agree), and :data:`SCHEMA` read back from them;
- :mod:`proxy.config.values` — :class:`Config`, :class:`Route`, :class:`UpstreamTLS`;
- :mod:`proxy.config.parse` — text to :class:`Config`; :mod:`proxy.config.checks` — checks
  across keys.
"""

from proxy.config.keys import Key
from proxy.config.parse import ConfigError, build_config, load_config, parse_config, route_from_values
from proxy.config.sections import (ACCOUNT_KEYS, PREFIX_SECTIONS, ROUTE_KEYS, SCHEMA, AdminSection, AuditSection,
                                   CockpitSection, HeadersSection, JocSection, LdapSection, LimitsSection,
                                   ListenSection, LogSection, LoginSection, SessionsSection, UpstreamSection,
                                   WebauthnSection, WebsocketSection, default_values, documented_keys)
from proxy.config.values import Config, Route, UpstreamTLS

__all__ = [
    "ACCOUNT_KEYS", "PREFIX_SECTIONS", "ROUTE_KEYS", "SCHEMA", "AdminSection", "AuditSection", "CockpitSection",
    "Config", "ConfigError", "HeadersSection", "JocSection", "Key", "LdapSection", "LimitsSection",
    "ListenSection", "LogSection", "LoginSection", "Route", "SessionsSection", "UpstreamSection", "UpstreamTLS",
    "WebauthnSection", "WebsocketSection", "build_config", "default_values", "documented_keys", "load_config",
    "parse_config", "route_from_values",
]
