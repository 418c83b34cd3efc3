"""conf/joc-example.conf and conf/cockpit.conf stay valid and consistent with the code."""

from __future__ import annotations

import configparser
from pathlib import Path

from trust import issue as I

ROOT = Path(__file__).resolve().parents[2]


def test_joc_example_parses(tmp_path: Path) -> None:
    from proxy.config import parse_config

    ca = I.ca("example CA")
    cert, key = I.server(ca, ("localhost",)).write(tmp_path, "server")
    (tmp_path / "trust.d").mkdir()
    (tmp_path / "trust.d" / "ca.pem").write_bytes(ca.cert_pem())
    text = (ROOT / "conf" / "joc-example.conf").read_text()
    text = (text.replace("/etc/certgate/server.pem", str(cert)).replace("/etc/certgate/server.key", str(key))
            .replace("/etc/certgate/trust.d", str(tmp_path / "trust.d")))
    cfg = parse_config(text, tmp_path / "joc.conf")
    assert cfg.default_route.kind == "joc" and cfg.joc.login_path == "/joc/api/authentication/login"
    assert cfg.login.password == "upstream"


def test_cockpit_conf_matches_what_the_tests_run() -> None:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT / "conf" / "cockpit.conf")
    assert cp["WebService"]["LoginTo"] == "false"
    assert cp["basic"]["action"] == "none" and cp["negotiate"]["action"] == "none"
    command = cp["bearer"]["Command"]
    assert " " not in command, "cockpit 287 execs Command as one path: no arguments"
    assert 1 <= int(cp["bearer"]["timeout"]) <= 900
