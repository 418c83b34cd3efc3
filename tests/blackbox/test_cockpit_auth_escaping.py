"""Issue 12: the real `certgate cockpit-auth` command, run by a real cockpit-ws, writes only
escaped text to its stderr (cockpit-ws's log) whatever the account and peer strings hold."""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path

from proxy.frontdoors.assertion import assertion_key, mint_assertion
from proxy.login.keys import load_secret
from tests.blackbox.test_cockpit_auth_command import login
from tests.harness.cockpit import write_cockpit_auth_config
from tests.harness.cockpit_ws import CockpitWs
from tests.harness.gateway import CERTGATE

EVIL = "no-such\x1b[31m\r\nFORGED\x00\x7f\x85\u202e\u2028user"


def test_refusal_of_a_control_character_account_is_logged_escaped(tmp_path: Path) -> None:
    cfg = write_cockpit_auth_config(tmp_path / "c")
    key = assertion_key(load_secret(tmp_path / "c" / "certgate.secret"))
    with CockpitWs([CERTGATE, "cockpit-auth", "--config", str(cfg)]) as ws:
        tok = mint_assertion(key, account=EVIL, fingerprint="ab" * 32, now=time.time(), lifetime=30)
        status, reason, _, _ = login(ws, "Bearer " + tok)
        assert status == 403, (status, reason, ws.log()[-3000:])
        lines = [line for line in ws.log().splitlines() if "certgate-cockpit-auth[" in line]
    refused = [line for line in lines if "reason=user-refused" in line]
    assert refused, lines
    for line in lines:
        assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in line), repr(line)
    assert "no-such\\x1b[31m\\r\\nFORGED\\x00\\x7f\\x85\\u202e\\u2028user" in refused[0]
    assert not any(line.startswith("FORGED") for line in ws.log().splitlines())
