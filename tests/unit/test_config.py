"""proxy.config: the schema, every problem reported, and conf/certgate.conf kept complete."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from proxy.config import SCHEMA, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def _files(tmp_path: Path) -> None:
    (tmp_path / "server.pem").write_text("x")
    (tmp_path / "server.key").write_text("x")
    (tmp_path / "trust.d").mkdir(exist_ok=True)


MINIMAL = """
[listen]
address = 127.0.0.1
port = 8443
certificate = server.pem   ; PEM certificate chain
key = server.key           ; PEM private key
client_auth = need         ; need | want | none
[trust]
store = trust.d
[upstream]
url = http://127.0.0.1:9090
"""


def test_minimal_contract_config_parses_with_relative_paths(tmp_path: Path) -> None:
    """The issue's example config parses; relative paths resolve against the config's folder."""
    _files(tmp_path)
    cfg = parse_config(MINIMAL, tmp_path / "certgate.conf")
    assert cfg.listen.port == 8443
    assert cfg.listen.client_auth == "need"
    assert cfg.listen.certificate == tmp_path.resolve() / "server.pem"
    assert cfg.trust.store == tmp_path.resolve() / "trust.d"
    assert cfg.default_route.url == "http://127.0.0.1:9090"
    assert cfg.default_route.port == 9090 and cfg.default_route.scheme == "http"
    assert cfg.headers.account == "X-Remote-User"
    assert cfg.login.required_auth_methods == [["tls-cert"]]


def test_every_problem_is_reported_with_section_key_and_reason(tmp_path: Path) -> None:
    """Several mistakes at once: all of them come back, each naming section and key."""
    _files(tmp_path)
    text = MINIMAL.replace("port = 8443", "port = 99999").replace("client_auth = need", "client_auth = maybe")
    text += "\nbogus = 1\n[nonsense]\nx = 1\n[login]\nrequired_auth_methods = [[\"password\"]]\n"
    with pytest.raises(ConfigError) as ei:
        parse_config(text, tmp_path / "c.conf")
    msgs = [str(p) for p in ei.value.problems]
    assert any(m.startswith("[listen] port:") and "1..65535" in m for m in msgs), msgs
    assert any(m.startswith("[listen] client_auth:") and "'maybe'" in m for m in msgs), msgs
    assert any(m.startswith("[upstream] bogus:") and "unknown key" in m for m in msgs), msgs
    assert any(m.startswith("[nonsense]") and "unknown section" in m for m in msgs), msgs
    assert any(m.startswith("[login] required_auth_methods:") and "tls-cert" in m for m in msgs), msgs


def test_missing_required_keys_and_files(tmp_path: Path) -> None:
    """A config without certificate/url names each missing key; missing files are named."""
    with pytest.raises(ConfigError) as ei:
        parse_config("[listen]\ncertificate = nope.pem\n[trust]\nstore = t\n", tmp_path / "c.conf")
    msgs = [str(p) for p in ei.value.problems]
    assert any(m.startswith("[listen] key:") and "required" in m for m in msgs), msgs
    assert any(m.startswith("[upstream] url:") and "required" in m for m in msgs), msgs
    assert any(m.startswith("[listen] certificate:") and "nope.pem" in m for m in msgs), msgs


@pytest.mark.parametrize("line,fragment", [
    ("url = ftp://x", "http:// or https://"),
    ("url = http://:80", "http:// or https://"),
    ("url = http://h:99999", "invalid port"),
])
def test_bad_upstream_urls(tmp_path: Path, line: str, fragment: str) -> None:
    """Upstream URLs must be http(s) with a host and a valid port."""
    _files(tmp_path)
    with pytest.raises(ConfigError) as ei:
        parse_config(MINIMAL.replace("url = http://127.0.0.1:9090", line), tmp_path / "c.conf")
    assert any(fragment in str(p) for p in ei.value.problems)


def test_cookie_name_must_keep_host_prefix(tmp_path: Path) -> None:
    """The session cookie name cannot drop the __Host- prefix."""
    _files(tmp_path)
    with pytest.raises(ConfigError) as ei:
        parse_config(MINIMAL + "[sessions]\ncookie_name = sid\n", tmp_path / "c.conf")
    assert any("__Host-" in str(p) for p in ei.value.problems)


def test_routes_by_prefix_longest_first(tmp_path: Path) -> None:
    """[route:NAME] sections route by longest path prefix; the default upstream is last."""
    _files(tmp_path)
    text = MINIMAL + ("[route:joc]\nprefix = /joc/\nurl = http://127.0.0.1:4446\nkind = joc\n"
                      "[route:jocapi]\nprefix = /joc/api/\nurl = http://127.0.0.1:4447\n")
    cfg = parse_config(text, tmp_path / "c.conf")
    assert [r.name for r in cfg.routes] == ["jocapi", "joc", "default"]
    assert cfg.route_for("/joc/api/x").name == "jocapi"
    assert cfg.route_for("/joc/index.html").name == "joc"
    assert cfg.route_for("/other").name == "default"


def test_unreadable_config_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """A missing file or non-UTF-8 bytes are reported as problems."""
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "absent.conf")
    assert "cannot read" in str(ei.value)
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"[listen]\nport = \xff\n")
    with pytest.raises(ConfigError) as ei:
        load_config(bad)
    assert "not UTF-8" in str(ei.value)


def test_reference_config_documents_every_key() -> None:
    """conf/certgate.conf names every key of every section of the schema."""
    text = (ROOT / "conf" / "certgate.conf").read_text()
    for section, keys in SCHEMA.items():
        m = re.search(rf"^\[{re.escape(section)}\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M)
        assert m, f"[{section}] missing from conf/certgate.conf"
        body = m.group(1)
        for key in keys:
            assert re.search(rf"^;?{re.escape(key)} =", body, re.M), f"[{section}] {key} not documented"


def test_reference_config_is_valid_with_its_files(tmp_path: Path) -> None:
    """The reference config itself parses once its certificate/key files exist."""
    _files(tmp_path)
    text = (ROOT / "conf" / "certgate.conf").read_text()
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    cp.read_string(text)
    cfg = parse_config(text, tmp_path / "certgate.conf")
    assert cfg.listen.client_auth == "need"


def _cfg(tmp_path: Path, extra: str) -> "object":
    _files(tmp_path)
    return parse_config(MINIMAL + extra, tmp_path / "certgate.conf")


def test_presence_interval_defaults_from_grace(tmp_path: Path) -> None:
    """No presence_interval: grace / 4, at most 30 s (a short grace works with otherwise default keys)."""
    assert _cfg(tmp_path, "").sessions.presence_interval == 30.0
    assert _cfg(tmp_path, "[sessions]\ngrace = 40\n").sessions.presence_interval == 10.0
    assert _cfg(tmp_path, "[sessions]\ngrace = 8\n").sessions.presence_interval == 2.0
    assert _cfg(tmp_path, "[sessions]\ngrace = 2\n").sessions.presence_interval == 1.0  # at least 1 s
    assert _cfg(tmp_path, "[sessions]\npresence_interval = 12\n").sessions.presence_interval == 12.0


def test_inject_presence_script_is_auto_yes_or_no(tmp_path: Path) -> None:
    assert _cfg(tmp_path, "").sessions.inject_presence_script == "auto"
    assert _cfg(tmp_path, "[sessions]\ninject_presence_script = yes\n").sessions.inject_presence_script is True
    assert _cfg(tmp_path, "[sessions]\ninject_presence_script = off\n").sessions.inject_presence_script is False
    with pytest.raises(ConfigError) as ei:
        _cfg(tmp_path, "[sessions]\ninject_presence_script = sometimes\n")
    assert "[sessions] inject_presence_script" in str(ei.value) and "auto, yes or no" in str(ei.value)


COCKPIT = MINIMAL.replace("url = http://127.0.0.1:9090", "url = http://127.0.0.1:9090\nkind = cockpit")


@pytest.mark.parametrize("extra,where,what", [
    ("[sessions]\ngrace = 60\npresence_interval = 30\n", "[sessions] presence_interval",
     "more than a third of grace"),
    ("[sessions]\ngrace = 2\n", "[sessions] grace", "too short for the presence script"),
])
def test_presence_interval_that_cannot_keep_a_session_is_refused(tmp_path: Path, extra: str, where: str,
                                                                 what: str) -> None:
    _files(tmp_path)
    with pytest.raises(ConfigError) as ei:
        parse_config(COCKPIT + extra, tmp_path / "certgate.conf")
    msg = str(ei.value)
    assert where in msg and what in msg and "\n" not in msg


def test_presence_limits_apply_only_where_the_script_is_injected(tmp_path: Path) -> None:
    _files(tmp_path)
    # generic upstream, auto: no script, so a short grace or a long interval is fine
    assert parse_config(MINIMAL + "[sessions]\ngrace = 2\n", tmp_path / "c.conf").sessions.grace == 2
    parse_config(MINIMAL + "[sessions]\ngrace = 60\npresence_interval = 30\n", tmp_path / "c.conf")
    parse_config(COCKPIT + "[sessions]\ngrace = 2\ninject_presence_script = no\n", tmp_path / "c.conf")
    # a cockpit route with grace shorter than [listen] idle_timeout and default keys otherwise: accepted
    cfg = parse_config(COCKPIT + "[sessions]\ngrace = 12\n", tmp_path / "c.conf")
    assert cfg.sessions.presence_interval == 3.0 and cfg.listen.idle_timeout == 120.0
