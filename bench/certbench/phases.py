"""Timed load phases: run a load tool on the load core, account the server's CPU.

"server CPU µs/op" = CPU seconds of the proxy's process tree during the phase divided
by the operations completed. It does not depend on whether the load generator saturated
the server, so 1e6 / µs is the per-core capacity. The upstream's CPU is kept apart.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .procs import Proc, core_busy_seconds, cpu_seconds, pause, pinned, rss_kib

Parsed = dict[str, Any]


@dataclass
class Target:
    """What a phase loads: the proxy (its process tree), its port, its upstreams, the PKI."""

    server: Proc
    port: int
    upstreams: list[Proc]
    pki: Path
    cgload: Path
    shim: Path
    load_cpus: str | None

    def cgload_argv(self, mode: str, *extra: str, cert: bool = True) -> list[str]:
        argv = [str(self.cgload), mode, "-addr", f"127.0.0.1:{self.port}", "-ca", str(self.pki / "ca.pem")]
        if cert:
            argv += ["-cert", str(self.pki / "client.pem"), "-key", str(self.pki / "client.key")]
        else:
            argv += ["-nocert"]
        return argv + list(extra)

    def go_env(self) -> dict[str, str]:
        cores = len(self.load_cpus.split(",")) if self.load_cpus else os.cpu_count() or 1
        return dict(os.environ, GOMAXPROCS=str(cores))

    def wrk_env(self) -> dict[str, str]:
        return dict(os.environ, LD_PRELOAD=str(self.shim), CERTINJECT_CERT=str(self.pki / "client.pem"),
                    CERTINJECT_KEY=str(self.pki / "client.key"))

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_phase(t: Target, name: str, argv: list[str], parse: Callable[[str], Parsed],
              limit_s: float, env: dict[str, str] | None = None) -> Parsed:
    """Run ``argv`` on the load core, bounded by ``limit_s`` + 30 s, and account CPU around it."""
    spids, upids = t.server.pids, [p for u in t.upstreams for p in u.pids]
    b0 = core_busy_seconds()
    each0 = [cpu_seconds([p]) for p in spids]
    c0, s0, u0, t0 = _children_cpu(), cpu_seconds(spids), cpu_seconds(upids), time.monotonic()
    try:
        p = subprocess.run(pinned(t.load_cpus, argv), capture_output=True, text=True, env=env,
                           timeout=limit_s + 30)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"timed out after {limit_s + 30:.0f} s: {e}", -1
    wall = time.monotonic() - t0
    try:
        r = parse(out)
    except (ValueError, KeyError, IndexError) as e:
        r = {"ok": 0, "parse_error": f"{type(e).__name__}: {e}"}
    srv, ups = cpu_seconds(spids) - s0, cpu_seconds(upids) - u0
    each = [round(cpu_seconds([p]) - c, 3) for p, c in zip(spids, each0)]
    b1 = core_busy_seconds()
    cli = _children_cpu() - c0
    busy = {c: (b1[c] - b0.get(c, 0.0)) / wall for c in b1} if wall else {}
    r["core_busy"] = {str(c): round(v, 3) for c, v in busy.items()}
    # CPU (in cores) used meanwhile by programs that are not part of this benchmark:
    # other people's work on a shared machine. Large values make the phase suspect.
    r["foreign_cores"] = round(sum(busy.values()) - (srv + ups + cli) / wall, 3) if wall else None
    ok = r.get("ok") or 0
    r.update(phase=name, rc=rc, wall_s=round(wall, 3), server_cpu_s=round(srv, 3),
             upstream_cpu_s=round(ups, 3), client_cpu_s=round(cli, 3),
             server_util=round(srv / wall, 3) if wall else None, server_cpu_each=each)
    r["server_us_per_op"] = round(srv / ok * 1e6, 1) if ok else None
    r["upstream_us_per_op"] = round(ups / ok * 1e6, 1) if ok else None
    if rc != 0 or not ok or r.get("errors"):
        r["output_tail"] = out[-800:]
    return r


def parse_json_line(out: str) -> Parsed:
    """The last JSON object line a cgload run printed."""
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result in output: %r" % out[-300:])


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str) -> Parsed:
    """Requests, errors and the 50/99th latency percentiles from ``wrk --latency`` output."""
    r: Parsed = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["requests"] = int(m.group(1)) if m else 0
    for p in ("50", "99"):
        m = re.search(r"\n\s+%s%%\s+([\d.]+)(us|ms|s|m)\b" % p, out)
        r[f"p{p}_ms"] = _ms(m.group(1), m.group(2)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    # Only answered 2xx requests count as operations.
    r["ok"] = max(0, r["requests"] - r["non2xx"])
    r["errors"] += r["non2xx"]
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rate"] = float(m.group(1)) * r["ok"] / r["requests"] if m and r["requests"] else 0.0
    return r


def wrk(t: Target, name: str, conns: int, seconds: float, threads: int = 1) -> Parsed:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", t.url()]
    return run_phase(t, name, argv, parse_wrk, seconds, env=t.wrk_env())


def cgload(t: Target, name: str, mode: str, seconds: float, *extra: str) -> Parsed:
    argv = t.cgload_argv(mode, "-d", f"{seconds}s", *extra)
    return run_phase(t, name, argv, parse_json_line, seconds, env=t.go_env())


def idle_rss(t: Target, n: int, hold_s: float = 120.0) -> Parsed:
    """Open ``n`` idle keep-alive mTLS connections and read the proxy's RSS while they sit."""
    argv = t.cgload_argv("idle", "-n", str(n), "-c", "50", "-d", f"{hold_s}s")
    p = subprocess.Popen(pinned(t.load_cpus, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=t.go_env())
    assert p.stdin and p.stdout and p.stderr
    ready = ""
    for line in p.stderr:  # cgload prints READY when all connections are open (bounded by -d)
        if line.startswith("READY"):
            ready = line
            break
    pause(2.0)  # let the server settle
    rss = rss_kib(t.server.pids)
    try:
        out, err = p.communicate(input="", timeout=30)  # closing stdin releases the connections
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    parts = ready.split()
    res: Parsed = {"opened": int(parts[1]) if len(parts) == 3 else 0,
                   "failed": int(parts[2]) if len(parts) == 3 else n, "rss_kib": rss}
    try:
        res["last_error"] = parse_json_line(out).get("last_error", "")
    except ValueError:
        res["last_error"] = (err or "")[-300:]
    pause(1.0)
    return res


def scale(t: Target, n: int, probe_s: float = 3.0, hold_s: float = 300.0) -> Parsed:
    """Hold ``n`` idle mTLS connections; read the proxy's RSS; then time new clients meanwhile.

    The new clients are ``cgload hs -c 1`` (one full handshake plus one request each, one at
    a time) for ``probe_s`` seconds; their p50/p99 are what a person arriving at a busy gateway
    waits. The file-descriptor limit is raised by the harness at start (inherited by all).
    """
    argv = t.cgload_argv("idle", "-n", str(n), "-c", "100", "-d", f"{hold_s}s")
    p = subprocess.Popen(pinned(t.load_cpus, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=t.go_env())
    assert p.stdin and p.stdout and p.stderr
    ready = ""
    for line in p.stderr:
        if line.startswith("READY"):
            ready = line
            break
    pause(2.0)
    res: Parsed = {"rss_kib": rss_kib(t.server.pids)}
    parts = ready.split()
    res["opened"] = int(parts[1]) if len(parts) == 3 else 0
    res["failed"] = int(parts[2]) if len(parts) == 3 else n
    probe = cgload(t, "scale_probe", "hs", probe_s, "-c", "1")
    res.update(probe_ok=probe.get("ok"), probe_errors=probe.get("errors"), p50_ms=probe.get("p50_ms"),
               p99_ms=probe.get("p99_ms"), probe_server_us=probe.get("server_us_per_op"))
    try:
        p.communicate(input="", timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
    res["settle_s"] = settle(t.server.pids)
    return res


def settle(pids: list[int], limit_s: float = 30.0, idle_share: float = 0.05) -> float:
    """Wait until ``pids`` use under ``idle_share`` of a core for 1 s (e.g. done closing 10,000
    connections), at most ``limit_s``; returns the seconds waited."""
    t0 = time.monotonic()
    last = cpu_seconds(pids)
    while time.monotonic() - t0 < limit_s:
        pause(1.0)
        now = cpu_seconds(pids)
        if now - last < idle_share:
            break
        last = now
    return round(time.monotonic() - t0, 1)
