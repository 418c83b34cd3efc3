"""Real handshakes against real gateways, OCSP off and on: the gateway's CPU per connection.

Used by ``ocsp_bench.py --e2e``. Each connection is a full TLS 1.3 mTLS handshake plus one
``GET /`` answered by a local upstream (so a cold connection waits for its OCSP answer before
its response). CPU is the gateway process's utime + stime from ``/proc/PID/stat`` before and
after each phase (10 ms ticks: phases are long enough for that to be under a few percent).
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from trust import issue as I

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Upstream:
    def __init__(self) -> None:
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, *a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Gateway:
    def __init__(self, folder: Path, store: Path, upstream: str, ocsp: str) -> None:
        server = I.server(I.ca("bench server CA"), ("localhost", "127.0.0.1"))
        cert, key = server.write(folder, "server")
        self.port = _free_port()
        conf = folder / "certgate.conf"
        conf.write_text(f"[listen]\nport = {self.port}\ncertificate = {cert}\nkey = {key}\nmax_connections = 100000\n"
                        f"[trust]\nstore = {store}\nocsp = {ocsp}\nocsp_timeout = 5\n"
                        f"[login]\nrequired_auth_methods = [[\"tls-cert\"]]\n[upstream]\nurl = {upstream}\n"
                        "[sessions]\nstore = memory\n[log]\nlevel = warn\n[audit]\nfile = audit.log\n")
        self.log = open(folder / "gateway.log", "wb")
        self.proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "certgate"), "run", "--config", str(conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=folder, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"certgate did not start: {(folder / 'gateway.log').read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)
        self.log.close()


def _contexts(folder: Path, leaves: Sequence[I.Issued]) -> list[ssl.SSLContext]:
    out = []
    for n, leaf in enumerate(leaves):
        cert, key = leaf.write(folder / "clients", f"c{n}")
        ctx = ssl._create_unverified_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(str(cert), str(key))
        out.append(ctx)
    return out


def _connect(port: int, ctx: ssl.SSLContext) -> bool:
    with socket.create_connection(("127.0.0.1", port), 10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data.startswith(b"HTTP/1.1 200")


def _phase(gw: _Gateway, ctxs: Sequence[ssl.SSLContext], repeat: int = 1) -> tuple[float, int]:
    """Gateway CPU µs per connection over ``ctxs`` (each used ``repeat`` times), and the failures."""
    failures = 0
    c0 = _cpu(gw.proc.pid)
    for _ in range(repeat):
        for ctx in ctxs:
            failures += not _connect(gw.port, ctx)
    return (_cpu(gw.proc.pid) - c0) / (len(ctxs) * repeat) * 1e6, failures


def measure(folder: Path, store: Path, known: I.Issued, cold: Sequence[Sequence[I.Issued]], known_reps: int
            ) -> dict[str, list[float]]:
    """Per repetition: µs per connection for a known certificate (off / cached) and new ones (off / cold)."""
    upstream = _Upstream()
    gws: dict[str, _Gateway] = {}
    for mode in ("off", "hard"):
        (folder / mode).mkdir(parents=True)
        gws[mode] = _Gateway(folder / mode, store, upstream.url, mode)
    out: dict[str, list[float]] = {"e2e_known_off_us": [], "e2e_known_cached_us": [], "e2e_new_off_us": [],
                                   "e2e_new_cold_us": [], "e2e_failures": []}
    try:
        known_ctx = _contexts(folder / "known", [known])
        for gw in gws.values():
            _phase(gw, known_ctx, 20)  # warm: imports, caches, the known certificate's OCSP answer
        for r, leaves in enumerate(cold):
            ctxs = _contexts(folder / f"rep{r}", leaves)
            failures = 0
            for key, gw, cs, rep in (("e2e_known_off_us", gws["off"], known_ctx, known_reps),
                                     ("e2e_known_cached_us", gws["hard"], known_ctx, known_reps),
                                     ("e2e_new_off_us", gws["off"], ctxs, 1),
                                     ("e2e_new_cold_us", gws["hard"], ctxs, 1)):
                us, bad = _phase(gw, cs, rep)
                out[key].append(us)
                failures += bad
            out["e2e_failures"].append(float(failures))
    finally:
        for gw in gws.values():
            gw.stop()
        upstream.close()
    return out
