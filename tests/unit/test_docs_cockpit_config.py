"""docs/cockpit.md's setup configuration parses, and gives the browser semantics its text promises."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def _docs_config(tmp_path: Path, extra: str = "") -> str:
    text = (ROOT / "docs" / "cockpit.md").read_text()
    block = re.search(r"4\. certgate\.conf.*?```ini\n(.*?)```", text, re.S)
    assert block, "docs/cockpit.md lost its certgate.conf block"
    ini = "\n".join(line[3:] if line.startswith("   ") else line for line in block.group(1).splitlines())
    for name in ("server.pem", "server.key", "passwords"):
        (tmp_path / name).write_text("x")
    (tmp_path / "trust.d").mkdir(exist_ok=True)
    return ini.replace("/etc/certgate/", f"{tmp_path}/").replace("/var/lib/certgate/", f"{tmp_path}/") + extra


def test_docs_cockpit_config_is_valid_and_turns_presence_on(tmp_path: Path) -> None:
    cfg = parse_config(_docs_config(tmp_path), tmp_path / "certgate.conf")
    assert cfg.default_route.kind == "cockpit" and cfg.listen.client_auth == "want"
    assert cfg.sessions.inject_presence_script == "auto"  # on for kind = cockpit
    assert cfg.sessions.presence_interval == 30.0 and cfg.sessions.grace == 300.0


def test_docs_cockpit_config_with_a_short_grace_needs_no_other_key(tmp_path: Path) -> None:
    """What the browser suite does: the same configuration, only the times shortened."""
    cfg = parse_config(_docs_config(tmp_path, "grace = 6\nlong_grace = 16\n"), tmp_path / "certgate.conf")
    assert cfg.sessions.grace == 6.0 and cfg.sessions.presence_interval == 1.5
    assert cfg.sessions.grace < cfg.listen.idle_timeout
