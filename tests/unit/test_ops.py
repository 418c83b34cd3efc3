"""proxy.app.observing / proxy.observe.logfiles / proxy.app.sdnotify / proxy.observe.accesslog, in memory with a Clock."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import Logger

from proxy.clock import rfc3339
from proxy.observe.logfiles import LogFile, reopen_all
from proxy.app.observing import ExpiryWarner, expiry_lines
from proxy.listener.reload import TrustState
from proxy.app.sdnotify import notify, watchdog_interval
from tests.harness.config import listener_config
from tests.harness.pki import Pki
from trust import issue as I


def test_expiry_warnings_at_start_on_reload_and_daily(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    clock = Clock()
    clock.advance(I.utcnow().timestamp())
    state = TrustState(listener_config(pki), clock)
    logged: list[dict] = []
    warner = ExpiryWarner(state, clock, 14, Logger(observer=logged.append))
    warner.start()
    assert logged == []  # a 10-year CA and fresh certificates: nothing to say
    soon = I.ca("short-lived CA", days=10)
    (pki.store / "soon.pem").write_bytes(soon.cert_pem())
    assert state.reload("test")
    lines = [e["line"] for e in logged if e.get("when") == "reload"]
    assert len(lines) == 1 and "soon.pem" in lines[0] and "expires in 9 days" in lines[0], lines
    clock.advance(86400)
    daily = [e["line"] for e in logged if e.get("when") == "daily"]
    assert len(daily) == 1 and "expires in 8 days" in daily[0], daily
    # the server certificate, within the window
    far = pki.server.cert.not_valid_after_utc.timestamp() - 5 * 86400 + 3600
    assert any("server certificate" in x and "expires in 4 days" in x
               for x in expiry_lines(state.current, far, 14))
    warner.stop()


def test_log_file_is_0640_and_reopens_after_rename(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    f = LogFile(str(path), buffered=True)
    f.write("one\n")
    assert path.read_text() == ""  # buffered until flush
    f.flush()
    old = os.umask(0o022)
    os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~old
    path.rename(tmp_path / "x.log.1")
    f.write("two\n")
    assert reopen_all() == []
    f.write("three\n")
    f.flush()
    assert (tmp_path / "x.log.1").read_text() == "one\ntwo\n" and path.read_text() == "three\n"
    f.close()


def test_sd_notify_datagram_and_watchdog_interval(tmp_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "n"))
    s.settimeout(5)
    try:
        assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "n")})
        assert s.recv(100) == b"READY=1"
    finally:
        s.close()
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_800_000_000.25) == "2027-01-15T08:00:00.250Z"


def test_metrics_registry_names_kinds_and_parser() -> None:
    """Counters end in _total once; redeclaring returns the same family; a clash is an error; the text parses."""
    import pytest
    from prometheus_client.parser import text_string_to_metric_families

    from proxy.observe.metrics import Metrics

    m = Metrics()
    c = m.counter("things_total", "Things", ("kind",))
    assert m.counter("things_total", "Things", ("kind",)) is c
    with pytest.raises(ValueError):
        m.counter("things_total", "Things", ("other",))
    c.labels("a").inc()
    c.labels("a").inc(2)
    m.histogram("wait_seconds", "Waits").labels().observe(0.003)
    m.gauge("open", "Open things", ("kind",), lambda: [(("a",), 4.0)])
    m.gauge("broken", "A gauge whose callback fails", (), lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert fams["certgate_things"].type == "counter"
    assert [s.name for s in fams["certgate_things"].samples] == ["certgate_things_total"]
    assert fams["certgate_wait_seconds"].type == "histogram" and fams["certgate_open"].type == "gauge"
    assert m.value("things_total", "a") == 3 and m.value("open", "a") == 4
    assert not fams["certgate_broken"].samples  # a failing gauge shows no series, /metrics still answers
