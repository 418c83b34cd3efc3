"""Operator-facing behaviour of the real process: both start routes, log files, signals."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.harness.client import request
from tests.harness.config import write_config
from tests.harness.gateway import Gateway, VENV_BIN
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream
from tests.harness.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _started_line(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if "certgate " in line and " starting: pid " in line:
            return line
    return ""


def test_twistd_plugin_and_certgate_run_log_to_the_same_file_with_the_same_reactor(tmp_path: Path) -> None:
    """`twistd -n certgate` and `certgate run`: both log through [log] file, both run the same reactor."""
    upstream = RecordingUpstream()
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


def _scrape(port: int) -> dict[str, object]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(fams: dict[str, object], family: str, sample: str, **labels: str) -> float | None:
    fam = fams.get(family)
    for s in getattr(fam, "samples", []):
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def test_metrics_parse_and_count_real_traffic(tmp_path: Path) -> None:
    """/metrics passes prometheus_client's parser; counters are counters, durations histograms."""
    from tests.harness.wait import free_port

    upstream = RecordingUpstream()
    try:
        pki = Pki(tmp_path / "pki")
        admin = free_port()
        cfg = write_config(tmp_path, pki, upstream=upstream.url, extra={"admin": {"port": admin}})
        with Gateway(cfg) as gw:
            for _ in range(3):
                assert request(gw.port, "GET", "/x", cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
            fams = _scrape(admin)
        kinds = {n: getattr(f, "type") for n, f in fams.items()}
        assert kinds["certgate_http_request_duration_seconds"] == "histogram"
        assert kinds["certgate_tls_handshake_duration_seconds"] == "histogram"
        assert kinds["certgate_upstream_response_duration_seconds"] == "histogram"
        assert kinds["certgate_upstream_connect_duration_seconds"] == "histogram"
        assert kinds["certgate_http_connections_accepted"] == "counter"
        assert kinds["certgate_gate_decisions"] == "counter"
        assert kinds["certgate_http_connections"] == "gauge"
        assert kinds["certgate_certificate_expiry_seconds"] == "gauge"
        assert kinds["certgate_sessions_live"] == "gauge" and kinds["certgate_login_duration_seconds"] == "histogram"
        assert "process_cpu_seconds" in kinds and kinds["certgate_build_info"] == "gauge"
        assert not [n for n in kinds if n.endswith("_count") and kinds[n] == "gauge"]
        assert _sample(fams, "certgate_http_request_duration_seconds", "certgate_http_request_duration_seconds_count",
                       route="default", code_class="2xx") == 3
        # the start-up probe's bare TCP connection counts too
        assert (_sample(fams, "certgate_http_connections_accepted", "certgate_http_connections_accepted_total") or 0) >= 3
        assert _sample(fams, "certgate_gate_decisions", "certgate_gate_decisions_total", outcome="forward") == 3
        ca_left = _sample(fams, "certgate_certificate_expiry_seconds", "certgate_certificate_expiry_seconds",
                          kind="ca")
        server_left = _sample(fams, "certgate_certificate_expiry_seconds", "certgate_certificate_expiry_seconds",
                              kind="server")
        assert ca_left is not None and ca_left > 86400 and server_left is not None and server_left > 86400
    finally:
        upstream.close()


def test_metrics_of_two_workers_are_summed(tmp_path: Path) -> None:
    """workers = 2: the admin listener (primary) reports requests served by both processes."""
    from tests.harness.wait import free_port
    from tests.blackbox.test_service import _listeners

    upstream = RecordingUpstream()
    try:
        pki = Pki(tmp_path / "pki")
        admin = free_port()
        cfg = write_config(tmp_path, pki, upstream=upstream.url,
                           extra={"admin": {"port": admin}, "listen": {"workers": 2},
                                  "sessions": {"store": f"sqlite:{tmp_path / 's.db'}"}})
        with Gateway(cfg) as gw:
            wait_for(lambda: len(_listeners(gw.port)) == 2, 20, what="two listening workers")
            for _ in range(20):
                assert request(gw.port, "GET", "/x", cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
            fams = _scrape(admin)
            n = _sample(fams, "certgate_http_request_duration_seconds", "certgate_http_request_duration_seconds_count",
                        route="default", code_class="2xx")
            assert n == 20, n
            accepted = _sample(fams, "certgate_http_connections_accepted", "certgate_http_connections_accepted_total")
            assert accepted is not None and accepted >= 20
    finally:
        upstream.close()


def test_access_log_lines_and_reopen_on_sigusr1(tmp_path: Path) -> None:
    """One JSON line per request in access.log (next to the config), 0640; rename + SIGUSR1 -> new file."""
    import json
    import stat

    upstream = RecordingUpstream()
    try:
        pki = Pki(tmp_path / "pki")
        cfg = write_config(tmp_path, pki, upstream=upstream.url,
                           extra={"audit": {"file": "audit.log"},
                                  "log": {"file": "gateway.log", "json_file": "gateway.json"}})
        access, audit, glog = tmp_path / "access.log", tmp_path / "audit.log", tmp_path / "gateway.log"
        with Gateway(cfg) as gw:
            assert request(gw.port, "GET", "/a/b?secret=1", cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
            wait_for(lambda: access.exists() and access.read_text().count("\n") == 1, 10, what="an access line")
            line = json.loads(access.read_text())
            assert line["method"] == "GET" and line["path"] == "/a/b" and line["status"] == 200
            assert line["account"] == "alice" and line["client"] == "127.0.0.1" and line["route"] == "default"
            assert line["upstream_status"] == 200 and line["duration"] >= line["upstream_response"] >= 0
            assert len(line["fingerprint"]) == 64 and line["time"].endswith("Z") and "T" in line["time"]
            assert line["bytes_out"] > 0 and "secret" not in access.read_text()
            events = [json.loads(x) for x in (tmp_path / "gateway.json").read_text().splitlines()]
            assert any(e.get("log_format", "").startswith("certgate {version} starting") for e in events)
            for f in (access, audit, glog, tmp_path / "gateway.json"):
                assert stat.S_IMODE(f.stat().st_mode) == 0o640, (f, oct(f.stat().st_mode))
            # logrotate without copytruncate: rename, then SIGUSR1
            for f in (access, glog):
                f.rename(f.with_suffix(".log.1"))
            gw.signal(signal.SIGUSR1)
            wait_for(lambda: glog.exists() and "log files reopened" in glog.read_text(), 10,
                     what="the log reopened after SIGUSR1")
            assert request(gw.port, "GET", "/after", cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
            wait_for(lambda: access.exists() and '"/after"' in access.read_text(), 10,
                     what="the next access line in the new file")
            assert '"/after"' not in (tmp_path / "access.log.1").read_text()
    finally:
        upstream.close()


def test_refused_handshakes_reach_the_audit_log_summed(tmp_path: Path) -> None:
    """Five refused handshakes from one source: one audit record with count 5 (written at latest on stop)."""
    import json

    from tests.harness.client import handshake_refused

    pki = Pki(tmp_path / "pki")
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9", extra={"audit": {"file": "audit.log"}})
    gw = Gateway(cfg).start()
    try:
        for _ in range(5):
            assert handshake_refused(gw.port, pki.rogue_client("alice"), pki.ca_pem)
    finally:
        # twistd re-raises SIGTERM after a clean shutdown
        assert gw.stop() in (0, -signal.SIGTERM)
    assert "Traceback" not in gw.log()
    recs = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    tls = [r for r in recs if r["event"] == "tls-handshake"]
    assert len(tls) == 1 and tls[0]["count"] == 5 and tls[0]["client_ip"] == "127.0.0.1", tls
    assert tls[0]["decision"] == "deny" and tls[0]["reason"]


def test_systemd_notify_ready_after_the_listener_is_up_and_watchdog(tmp_path: Path) -> None:
    """NOTIFY_SOCKET: READY=1 arrives when the port already accepts; WATCHDOG_USEC: WATCHDOG=1 pings."""
    import socket

    upstream = RecordingUpstream()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(20)
    try:
        pki = Pki(tmp_path / "pki")
        cfg = write_config(tmp_path, pki, upstream=upstream.url)
        port = int(cfg.read_text().split("port = ", 1)[1].split()[0])
        gw = Gateway(cfg, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        gw.start()
        try:
            first = sock.recv(4096).decode()
            assert first.startswith("READY=1\n") and f"127.0.0.1:{port}" in first, first
            assert f"MAINPID={gw.proc.pid}" in first  # type: ignore[union-attr]
            socket.create_connection(("127.0.0.1", port), 2).close()  # listening before READY was sent
            pings = [sock.recv(4096).decode() for _ in range(3)]
            assert pings == ["WATCHDOG=1"] * 3, pings
        finally:
            gw.stop()
        got = []
        sock.settimeout(5)
        while "STOPPING=1" not in got:
            got.append(sock.recv(4096).decode())
    finally:
        sock.close()
        upstream.close()


def test_logrotate_with_the_shipped_snippet_rotates_without_copytruncate(tmp_path: Path) -> None:
    """conf/logrotate, pointed at a test folder and this gateway's pid: renamed files, new ones written."""
    import shutil

    exe = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(exe).exists():
        raise RuntimeError("logrotate not found: install Debian's logrotate (apt-get install logrotate)")
    upstream = RecordingUpstream()
    try:
        pki = Pki(tmp_path / "pki")
        logs = tmp_path / "logs"
        logs.mkdir()
        cfg = write_config(tmp_path, pki, upstream=upstream.url,
                           extra={"log": {"file": str(logs / "certgate.log"), "access_file": str(logs / "access.log")},
                                  "audit": {"file": str(logs / "audit.log")}})
        with Gateway(cfg) as gw:
            assert request(gw.port, "GET", "/before", cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
            wait_for(lambda: '"/before"' in (logs / "access.log").read_text(), 10, what="the first access line")
            snippet = (ROOT / "conf" / "logrotate").read_text()
            assert "copytruncate" not in snippet.split("#", 1)[0] and "SIGUSR1" in snippet
            conf = snippet.replace("/var/log/certgate", str(logs))
            conf = conf.replace("create 0640 certgate certgate", "create 0640")
            conf = conf.replace("systemctl kill --signal=SIGUSR1 --kill-whom=main certgate.service",
                                f"kill -USR1 {gw.proc.pid}")  # type: ignore[union-attr]
            (tmp_path / "rotate.conf").write_text(conf)
            out = subprocess.run([exe, "--force", "--state", str(tmp_path / "state"), str(tmp_path / "rotate.conf")],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert (logs / "access.log.1").exists() and '"/before"' in (logs / "access.log.1").read_text()
            wait_for(lambda: "log files reopened" in (logs / "certgate.log").read_text()
                     if (logs / "certgate.log").exists() else False, 10, what="certgate to reopen its logs")
            assert request(gw.port, "GET", "/after", cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
            wait_for(lambda: (logs / "access.log").exists() and '"/after"' in (logs / "access.log").read_text(), 10,
                     what="the next access line in the new access.log")
            assert '"/before"' not in (logs / "access.log").read_text()
    finally:
        upstream.close()


def test_request_finished_during_the_shutdown_drain_is_in_the_access_log(tmp_path: Path) -> None:
    import threading

    slow = RecordingUpstream(delay=1.0)
    try:
        pki = Pki(tmp_path / "pki")
        cfg = write_config(tmp_path, pki, upstream=slow.url)
        gw = Gateway(cfg).start()
        result: dict[str, object] = {}
        t = threading.Thread(target=lambda: result.update(r=request(gw.port, "GET", "/slow", cert=pki.client("alice"),
                                                                    ca=pki.ca_pem)))
        t.start()
        wait_for(lambda: slow.requests, 10, what="the request to reach the upstream")
        gw.signal(signal.SIGTERM)
        t.join(15)
        assert gw.proc is not None and gw.proc.wait(15) in (0, -signal.SIGTERM)
        gw.stop()
        assert result["r"][0] == 200  # type: ignore[index]
        assert '"path":"/slow"' in (tmp_path / "access.log").read_text()
    finally:
        slow.close()


def test_failed_handshakes_are_counted_and_audited_by_reason(tmp_path: Path) -> None:
    """No certificate in need mode and a plain-HTTP request: audited once per reason; a bare probe is not."""
    import json
    import socket

    from tests.harness.wait import free_port
    from tests.harness.client import handshake_refused

    pki = Pki(tmp_path / "pki")
    admin = free_port()
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9",
                       extra={"audit": {"file": "audit.log"}, "admin": {"port": admin}})
    gw = Gateway(cfg).start()
    try:
        for _ in range(3):
            assert handshake_refused(gw.port, None, pki.ca_pem)
        with socket.create_connection(("127.0.0.1", gw.port), 5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            try:
                s.recv(100)
            except OSError:
                pass
        assert handshake_refused(gw.port, pki.rogue_client("alice"), pki.ca_pem)

        def failed() -> dict[str, float]:
            fams = _scrape(admin)
            fam = fams.get("certgate_tls_handshakes_failed")
            return {s.labels["reason"]: s.value for s in getattr(fam, "samples", [])
                    if s.name.endswith("_total")}

        wait_for(lambda: failed().get("no-certificate") == 3 and failed().get("not-tls") == 1
                 and failed().get("certificate-refused") == 1, 10, what="the failed-handshake counters")
    finally:
        assert gw.stop() in (0, -signal.SIGTERM)
    recs = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    by = {r["reason"]: r["count"] for r in recs if r["event"] == "tls-handshake"}
    assert by.get("no-certificate") == 3 and by.get("not-tls") == 1, by
    assert "closed" not in by and "certificate-refused" not in by
    assert sum(1 for r in recs if r["event"] == "tls-handshake") == 3, recs  # + the rogue one's own reason


def test_serves_under_the_units_umask_and_no_new_privileges(tmp_path: Path) -> None:
    """The parts of conf/certgate.service that apply without systemd: UMask=0027, NoNewPrivileges=yes."""
    import shutil
    import stat

    from tests.harness.gateway import CERTGATE

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("setpriv not found: install Debian's util-linux (apt-get install util-linux)")
    unit = (ROOT / "conf" / "certgate.service").read_text()
    assert "UMask=0027" in unit and "NoNewPrivileges=yes" in unit
    wrapper = tmp_path / "certgate-sandboxed"
    wrapper.write_text(f"#!/bin/sh\numask 0027\nexec {setpriv} --no-new-privs {CERTGATE} \"$@\"\n")
    wrapper.chmod(0o755)
    upstream = RecordingUpstream()
    try:
        pki = Pki(tmp_path / "pki")
        cfg = write_config(tmp_path, pki, upstream=upstream.url,
                           extra={"sessions": {"store": "sqlite:sessions.db"}, "audit": {"file": "audit.log"}})
        with Gateway(cfg, exe=str(wrapper)) as gw:
            assert request(gw.port, "GET", "/x", cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
            status = Path(f"/proc/{gw.proc.pid}/status").read_text()  # type: ignore[union-attr]
            assert "NoNewPrivs:\t1" in status
            wait_for(lambda: (tmp_path / "access.log").exists(), 10, what="the access log")
        for name in ("access.log", "audit.log", "sessions.db"):
            mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
            assert mode & 0o007 == 0, (name, oct(mode))  # nothing for others
    finally:
        upstream.close()
