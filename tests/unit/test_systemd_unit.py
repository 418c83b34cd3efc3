"""conf/certgate.service: Type=notify, state under StateDirectory=, and `systemd-analyze security` < 3.0."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "conf" / "certgate.service"


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_is_notify_with_state_and_logs_directories() -> None:
    svc = _unit()["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main" and svc["WatchdogSec"]
    assert svc["StateDirectory"] == "certgate" and svc["LogsDirectory"] == "certgate"
    assert "ReadWritePaths" not in svc  # nothing written to /etc/certgate
    assert svc["ExecStart"].endswith("certgate run --config /etc/certgate/certgate.conf")


def test_systemd_analyze_security_rates_the_unit_below_3() -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        raise RuntimeError("systemd-analyze not found: install Debian's systemd (apt-get install systemd)")
    out = subprocess.run([exe, "security", "--offline=yes", str(UNIT)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    m = re.search(r"Overall exposure level for certgate\.service: ([0-9.]+)", out.stdout)
    assert m, out.stdout[-2000:] + out.stderr[-2000:]
    assert float(m.group(1)) < 3.0, out.stdout
