"""Service-level behaviour of the real process: workers sharing the port, graceful shutdown."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.blackbox import Gateway, Pki, Recorder, handshake_refused, request, tls_handshake, wait_for, write_config


@pytest.fixture
def upstream() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def _listeners(port: int) -> set[int]:
    """PIDs of processes listening on 127.0.0.1:port."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    pids = set()
    for part in out.split("pid=")[1:]:
        pids.add(int(part.split(",", 1)[0]))
    return pids


def test_two_workers_share_the_port_and_both_serve(tmp_path: Path, upstream: Recorder) -> None:
    """workers = 2: two processes listen on the port (SO_REUSEPORT) and connections reach both."""
    pki = Pki(tmp_path / "pki")
    cfg = write_config(tmp_path, pki, upstream=upstream.url,
                       extra={"listen": {"workers": 2}, "sessions": {"store": f"sqlite:{tmp_path / 's.db'}"}})
    with Gateway(cfg) as gw:
        wait_for(lambda: len(_listeners(gw.port)) == 2, 20, what="two listening workers")
        pids = _listeners(gw.port)
        socks = [tls_handshake(gw.port, pki.client("alice"), pki.ca_pem) for _ in range(24)]
        try:
            out = subprocess.run(["ss", "-Htnp", "state", "established", f"sport = :{gw.port}"],
                                 capture_output=True, text=True).stdout
            serving = {int(p.split(",", 1)[0]) for p in out.split("pid=")[1:]}
            assert serving == pids, (serving, pids)
        finally:
            for s in socks:
                s.close()
        assert request(gw.port, cert=pki.client("alice"), ca=pki.ca_pem)[0] == 200
    wait_for(lambda: not _listeners(gw.port), 10, what="workers to exit with the primary")


def test_workers_need_a_shared_store(tmp_path: Path) -> None:
    """workers > 1 with the memory store is refused by check-config."""
    import sys

    pki = Pki(tmp_path / "pki")
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9", extra={"listen": {"workers": 2}})
    out = subprocess.run([str(Path(sys.executable).parent / "certgate"), "check-config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "[sessions] store" in out.stderr


def test_sigterm_finishes_in_flight_requests_then_exits(tmp_path: Path) -> None:
    """SIGTERM: stop accepting, the request in flight still gets its full answer, then exit 0."""
    slow = Recorder(delay=1.5)
    try:
        pki = Pki(tmp_path / "pki")
        cfg = write_config(tmp_path, pki, upstream=slow.url)
        gw = Gateway(cfg).start()
        result: dict[str, object] = {}

        def call() -> None:
            result["r"] = request(gw.port, "GET", "/slow", cert=pki.client("alice"), ca=pki.ca_pem)

        t = threading.Thread(target=call)
        t.start()
        wait_for(lambda: slow.requests, 10, what="the request to reach the upstream")
        gw.signal(signal.SIGTERM)
        wait_for(lambda: handshake_refused(gw.port, pki.client("alice"), pki.ca_pem), 5,
                 what="the listener to stop accepting")
        t.join(15)
        status, _, body = result["r"]  # type: ignore[misc]
        assert status == 200 and b"/slow" in body
        # twistd re-raises SIGTERM after a clean shutdown: death by SIGTERM, not a crash status
        assert gw.proc is not None
        gw.proc.wait(15)
        assert gw.proc.returncode in (0, -signal.SIGTERM), gw.log()
        assert "Traceback" not in gw.log()
        gw.stop()
    finally:
        slow.close()
