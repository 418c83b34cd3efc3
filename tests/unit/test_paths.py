"""proxy.paths: the canonical request target, its refusals, and the docs table that describes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.config import ConfigError, parse_config
from proxy.paths import TargetError, canonical_path, canonical_target, loose_path, same_login_path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "forwarding.md"


def canon(target: bytes, method: bytes = b"GET") -> bytes:
    return canonical_target(target, method)


def refused(target: bytes, method: bytes = b"GET") -> str:
    with pytest.raises(TargetError) as e:
        canonical_target(target, method)
    return e.value.reason


# --------------------------------------------------------------------------- per class

def test_dot_segments_resolved_and_never_above_the_root() -> None:
    assert canon(b"/a/./b") == b"/a/b"
    assert canon(b"/a/x/../b") == b"/a/b"
    assert canon(b"/a/b/.") == b"/a/b/"
    assert canon(b"/a/b/..") == b"/a/"
    assert canon(b"/a/..") == b"/"
    assert canon(b"/.well-known/x") == b"/.well-known/x"  # a dot file is not a dot segment
    assert canon(b"/a/.../b") == b"/a/.../b"
    assert canon(b"/%2e/a/%2E%2e/b") == b"/b"  # escaped dots are dots
    assert canon(b"/a/.%2e/b") == b"/b"
    for t in (b"/..", b"/../a", b"/a/../..", b"/a/../../b", b"/%2e%2e/etc/passwd", b"/./.."):
        assert "above the root" in refused(t), t


def test_path_parameters_are_refused_in_the_path_only() -> None:
    for t in (b"/a;b", b"/joc/api/authentication/login;jsessionid=1", b"/a/..;/b", b"/;", b"/a;/b"):
        assert "';'" in refused(t), t
    assert canon(b"/a%3Bb") == b"/a%3Bb"  # an escaped ';' is data, as Jetty sees it too
    assert canon(b"/a?x=1;y=2") == b"/a?x=1;y=2"


def test_repeated_and_trailing_slashes() -> None:
    assert canon(b"//a///b") == b"/a/b"
    assert canon(b"/a//") == b"/a/"
    assert canon(b"//") == b"/"
    assert canon(b"/a/") == b"/a/"  # a trailing slash is kept: /cockpit/ is not /cockpit
    assert canon(b"/a//..//b") == b"/b"  # empty segments go first, then dot segments


def test_percent_encoding() -> None:
    assert canon(b"/%41%7a%30%2D%2e%5F%7E") == b"/Az0-._~"  # unreserved: decoded
    assert canon(b"/a%2bb%3a%40") == b"/a%2Bb%3A%40"  # reserved: kept, upper-case hex
    assert canon(b"/%25") == b"/%25" and canon(b"/%2541") == b"/%2541"  # decoded once, by the upstream
    assert canon(b"/caf%c3%a9") == b"/caf%C3%A9"
    assert canon("/café".encode()) == b"/caf%C3%A9"  # raw UTF-8 is encoded
    assert canon(b'/a^b"c<d>e`f{g}h|i[j]') == b"/a%5Eb%22c%3Cd%3Ee%60f%7Bg%7Dh%7Ci%5Bj%5D"
    assert "%2F" in refused(b"/a%2fb") and "%2F" in refused(b"/a%2Fb")
    assert "%5C" in refused(b"/a%5cb")
    assert "NUL" in refused(b"/a%00")
    for t in (b"/a%0a", b"/a%0D", b"/a%1f", b"/a%7F"):
        assert "control" in refused(t), t
    for t in (b"/%", b"/a%2", b"/%zz", b"/%g0", b"/a%%41", b"/%+1"):
        assert "percent-escape" in refused(t), t
    for t in (b"/%C0%AF", b"/%ff", b"/%c3", b"/\xff", b"/%ED%A0%80"):  # overlong, lone bytes, surrogate
        assert "UTF-8" in refused(t), t


def test_case_is_kept() -> None:
    assert canon(b"/Cockpit/LOGIN") == b"/Cockpit/LOGIN"
    assert canon(b"/%4A") == b"/J" and canon(b"/%6a") == b"/j"


def test_raw_characters_refused() -> None:
    assert "'\\'" in refused(b"/a\\b")
    assert "'#'" in refused(b"/a#b") and "'#'" in refused(b"/a?b#c")
    for t in (b"/a b", b"/a\x00", b"/a\tb", b"/a\x7f", b"/a?b\x01"):
        refused(t)


def test_target_forms() -> None:
    assert canon(b"*", b"OPTIONS") == b"*"
    for t, m in ((b"*", b"GET"), (b"http://h/a", b"GET"), (b"h:443", b"CONNECT"), (b"", b"GET"), (b"a/b", b"GET")):
        assert "origin-form" in refused(t, m), t


def test_query_is_kept_byte_for_byte() -> None:
    assert canon(b"/a/../b?x=%2F..&y=/./;z") == b"/b?x=%2F..&y=/./;z"
    assert canon(b"/?") == b"/?"


def test_already_canonical_is_the_same_object() -> None:
    for t in (b"/", b"/cockpit/login", b"/joc/api/authentication/login?x=1", b"/.certgate/login", b"/a/",
              b"/a%2Bb", b"/~u/@x:1/!$&'()*+,="):
        assert canon(t) is t or canon(t) == t
        assert canonical_path(t.split(b"?")[0]) == t.split(b"?")[0]
    t = b"/cockpit/static/login.js"
    assert canon(t) is t


def test_idempotent_on_every_example() -> None:
    for t in (b"/a/./b/../c//d/", b"/%7e%2b", b"/x/%2e%2e/y", "/é/ü".encode(), b"/a|b"):
        c = canon(t)
        assert canon(c) == c


def test_loose_login_match() -> None:
    login = "/joc/api/authentication/login"
    for p in (login, login + "/", login.upper(), "/JOC/api/Authentication/LOGIN/"):
        assert same_login_path(p, login), p
    for p in ("/joc/api/authentication/logins", "/joc/api/authentication", "/joc/api/authentication/login//",
              "/joc/api/authentication/login/x", "/"):
        assert not same_login_path(p, login), p
    assert loose_path("/") == "/" and loose_path("/A/") == "/a"


# --------------------------------------------------------------------------- the docs table

def _doc_rows() -> list[tuple[str, str]]:
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("<!-- canonical-examples -->", 1)[1].split("<!-- /canonical-examples -->", 1)[0]
    rows = []
    for line in block.splitlines():
        m = re.match(r"^\| `([^`]*)`( \(`OPTIONS`\))? \| (.*) \|$", line)
        if m:
            rows.append((m.group(1) + (" OPTIONS" if m.group(2) else ""), m.group(3)))
    return rows


def test_docs_table_matches_the_code() -> None:
    rows = _doc_rows()
    assert len(rows) >= 25
    for target, want in rows:
        method = b"GET"
        if target.endswith(" OPTIONS"):
            target, method = target[: -len(" OPTIONS")], b"OPTIONS"
        raw = target.encode("utf-8")
        if want == "400":
            refused(raw, method)
        else:
            assert canon(raw, method) == want.strip("`").encode(), target


# --------------------------------------------------------------------------- configuration

BASE = """
[listen]
certificate = {d}/c.pem
key = {d}/k.pem
[trust]
store = {d}/store
[upstream]
url = http://127.0.0.1:9
"""


def _problems(tmp_path: Path, extra: str) -> str:
    for f in ("c.pem", "k.pem"):
        (tmp_path / f).write_text("x")
    (tmp_path / "store").mkdir(exist_ok=True)
    with pytest.raises(ConfigError) as e:
        parse_config(BASE.format(d=tmp_path) + extra, tmp_path / "certgate.conf")
    return str(e.value)


def test_configured_paths_must_be_canonical(tmp_path: Path) -> None:
    msg = _problems(tmp_path, "[joc]\nlogin_path = /joc/api/./authentication/login\n")
    assert "[joc] login_path" in msg and "write '/joc/api/authentication/login'" in msg
    msg = _problems(tmp_path, "[route:x]\nprefix = /a%2fb/\nurl = http://127.0.0.1:9\n")
    assert "[route:x] prefix" in msg and "%2F" in msg
    msg = _problems(tmp_path, "[cockpit]\nurl_root = /cg;x/\n")
    assert "[cockpit] url_root" in msg and "';'" in msg
