"""Operator-facing behaviour of the real process: both start routes, log files, signals."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.blackbox import VENV_BIN, Gateway, Pki, Recorder, request, wait_for, write_config


def _started_line(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if "certgate " in line and " starting: pid " in line:
            return line
    return ""


def test_twistd_plugin_and_certgate_run_log_to_the_same_file_with_the_same_reactor(tmp_path: Path) -> None:
    """`twistd -n certgate` and `certgate run`: both log through [log] file, both run the same reactor."""
    upstream = Recorder()
    try:
        pki = Pki(tmp_path / "pki")
        reactors = []
        for route in ("run", "twistd"):
            folder = tmp_path / route
            folder.mkdir()
            cfg = write_config(folder, pki, upstream=upstream.url, extra={"log": {"file": "gateway.log"}})
            log = folder / "gateway.log"
            if route == "run":
                with Gateway(cfg) as gw:
                    wait_for(lambda: _started_line(log), 10, what="the start line in [log] file")
                    assert request(gw.port, cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
            else:
                proc = subprocess.Popen([str(VENV_BIN / "twistd"), "--nodaemon", "--pidfile=", "certgate",
                                         "--config", str(cfg)], cwd=folder, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
                try:
                    wait_for(lambda: _started_line(log), 20, what="the start line in [log] file")
                    port = int(cfg.read_text().split("port = ", 1)[1].split()[0])
                    wait_for(lambda: request(port, cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200, 10,
                             what="twistd's gateway to serve")
                finally:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(20)
            line = _started_line(log)
            reactors.append(line.split("reactor ", 1)[1].strip())
        assert reactors[0] == reactors[1] == "DirectEPollReactor", reactors
    finally:
        upstream.close()
