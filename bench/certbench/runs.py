"""One run of one proxy: start it, check it does the job, measure, stop it.

A run is *valid* only if a request with the client certificate gets 200 through the
proxy and a client without a certificate is refused; only valid runs are measured.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import configs, phases
from .procs import Proc, pause, pinned, port_open, rss_kib, start, wait_for_quiet

Record = dict[str, Any]

#: control rows measured in the same run: name -> bench/floor.py mode
FLOORS = {"floor-static": "static", "floor-fwd": "forward"}


@dataclass(frozen=True)
class Plan:
    """Durations and switches of one benchmark mode."""

    name: str
    reps: int
    flavours: tuple[str, ...]
    hs_s: float
    ka_s: float
    c1_s: float
    ws_s: float
    workers_s: float
    workers_pairs: int       # workers=1 / workers=2 measurements per rep, alternated (1,2 then 2,1 ...)
    idle_conns: int          # 0: skip the RSS-with-idle-connections phase
    scale_conns: int         # 0: skip the 10,000-idle-connections phase (ECDSA, main runs)
    body_bytes: int          # 0: skip the large-body phases
    body_transfers: int
    ceiling_s: int
    quiet_wait_s: float      # before each run, wait up to this long for other programs to go idle
    retry_budget: int        # runs that may be repeated because other programs loaded the machine


QUICK = Plan("quick", 1, ("ec",), 3, 3, 2, 3, 3, 2, 0, 0, 0, 0, 1, 0, 0)
FULL = Plan("full", 3, ("ec", "rsa"), 10, 10, 5, 8, 8, 1, 1000, 10000, 256 << 20, 2, 3, 15, 6)


@dataclass
class Env:
    """Where things are and where things run."""

    out: Path
    root: Path              # the repository (for .venv and trust/)
    certgate: list[str]     # argv prefix that runs certgate; a stand-in nginx when empty
    cgload: Path
    shim: Path
    server_cpus: str | None
    load_cpus: str | None
    both_cpus: str | None
    ports: configs.Ports


def start_proxy(env: Env, proxy: str, flavour: str, upstream_port: int, workers: int, tag: str,
                cpus: str | None) -> tuple[Proc, int]:
    """Start ``proxy`` in front of ``upstream_port``; returns the process and its port."""
    pki = env.out / "pki" / flavour
    port = env.ports.proxy(proxy)
    if port_open(port):
        raise RuntimeError(f"port {port} for {proxy} is already in use by another program; stop it first")
    d = env.out / "run" / f"{proxy}-{tag}"
    log = env.out / "logs" / f"{proxy}-{tag}.log"
    if proxy in FLOORS:
        # The Python floor: bench/floor.py on the same wheel and TLS settings (see its docstring).
        floor = Path(__file__).resolve().parent.parent / "floor.py"
        argv = [str(env.root / ".venv" / "bin" / "python"), str(floor), FLOORS[proxy], str(port), str(pki),
                str(upstream_port)]
        fenv = dict(os.environ, PYTHONPATH=str(env.root))
        # certgate's OpenSSL settings (NumTickets = 0), as certgate runs: without them the floors
        # would pay for two TLS 1.3 tickets per handshake that certgate does not send
        conf = env.root / "proxy" / "listener" / "openssl-certgate.cnf"
        if not conf.exists():
            raise RuntimeError(f"{conf} is missing: the floor programs must run with certgate's OpenSSL settings")
        fenv["OPENSSL_CONF"] = str(conf)
        return start(proxy, argv, log, cpus, env=fenv), port
    if proxy == "nginx" or not env.certgate:
        conf = configs.nginx_proxy(d, pki, port, upstream_port, streaming=upstream_port == env.ports.stream)
        return start(proxy, ["nginx", "-c", str(conf), "-p", str(d)], log, cpus), port
    conf = configs.certgate(d, pki, port, upstream_port, workers, shared_sessions=tag.startswith("ec-workers"))
    return start(proxy, [*env.certgate, "run", "--config", str(conf)], log, cpus, cwd=d), port


def validate(t: phases.Target, path: str = "/") -> dict[str, Any]:
    """200 with the client certificate, refusal without; TLS facts for the record."""
    with_cert = phases.parse_json_line(_run(t, t.cgload_argv("check", "-path", path)))
    without = phases.parse_json_line(_run(t, t.cgload_argv("check", "-path", path, cert=False)))
    return {"with_cert": with_cert, "without_cert": without,
            "ok": with_cert.get("status") == 200 and without.get("status") != 200}


def _run(t: phases.Target, argv: list[str]) -> str:
    p = subprocess.run(pinned(t.load_cpus, argv), capture_output=True, text=True, timeout=60, env=t.go_env())
    return p.stdout + p.stderr


#: A run whose phases saw more than this many cores of other programs' work is repeated
#: (while the plan's retry budget lasts) and the cleaner of the two is kept.
FOREIGN_LIMIT = 0.5


def foreign_load(rec: Record) -> float:
    """The most CPU (in cores) other programs used during any measured phase of ``rec``."""
    vals = [ph.get("foreign_cores") for name, ph in rec.get("phases", {}).items() if name != "warmup"]
    return max((v for v in vals if v is not None), default=0.0)


class Runner:
    """Runs proxies against the shared upstreams and collects records."""

    def __init__(self, env: Env, plan: Plan, upstreams: dict[str, Proc]) -> None:
        self.env, self.plan, self.upstreams = env, plan, upstreams
        self.problems: list[str] = []
        self.retries_left = plan.retry_budget

    def clean(self, run: Callable[[], Record]) -> list[Record]:
        """``run()``; if other programs loaded the machine meanwhile, once more, keeping the cleaner.

        The discarded record stays in the output (``valid`` False, ``discarded`` says why).
        """
        first = run()
        if not first["valid"] or foreign_load(first) <= FOREIGN_LIMIT or self.retries_left <= 0:
            return [first]
        self.retries_left -= 1
        second = run()
        keep, drop = sorted((first, second), key=lambda r: (not r["valid"], foreign_load(r)))
        if drop["valid"]:
            drop["valid"] = False
            drop["discarded"] = (f"repeated: other programs used {foreign_load(drop):.2f} cores during it; "
                                 f"kept the run with {foreign_load(keep):.2f}")
        return [drop, keep]

    def _begin(self, proxy: str, flavour: str, rep: int, kind: str, upstream: str, workers: int,
               cpus: str | None, load_cpus: str | None,
               again: int = 0) -> tuple[Record, phases.Target | None, Proc | None]:
        rec: Record = {"proxy": proxy, "flavour": flavour, "rep": rep, "kind": kind, "valid": False,
                       "metrics": {}, "phases": {}, "time": time.strftime("%H:%M:%S")}
        if self.plan.quiet_wait_s:
            waited, busy = wait_for_quiet(self.plan.quiet_wait_s)
            rec["quiet_wait"] = {"waited_s": waited, "busy_cores_at_start": round(busy, 2)}
        up = self.upstreams[upstream]
        up_port = self.env.ports.upstream if upstream == "main" else self.env.ports.stream
        tag = f"{flavour}-{kind}-{rep}" + (f"-{again + 1}" if again else "")
        try:
            proc, port = start_proxy(self.env, proxy, flavour, up_port, workers, tag, cpus)
        except RuntimeError as e:
            rec["error"] = str(e)
            self.problems.append(f"{proxy} {tag}: {e}")
            return rec, None, None
        if not proc.wait_port(port):
            proc.stop()
            rec["error"] = f"{proxy} did not start listening on {port}; log {proc.log}:\n{proc.log_tail()}"
            last = next((ln for ln in reversed(proc.log_tail().splitlines()) if ln.strip()), "no output")
            self.problems.append(f"{proxy} {tag}: did not start: {last.strip()[:300]} (log: {proc.log})")
            return rec, None, None
        pause(0.5)
        t = phases.Target(proc, port, [up], self.env.out / "pki" / flavour, self.env.cgload,
                          self.env.shim, load_cpus)
        try:
            check = validate(t, "/")
        except BaseException:
            proc.stop()
            raise
        rec["check"] = check
        if not check["ok"]:
            rec["error"] = "validity check failed: " + str(check)[:600]
            self.problems.append(f"{proxy} {tag}: validity check failed (with cert: "
                                 f"{check['with_cert'].get('status')} {check['with_cert'].get('error', '')}; "
                                 f"without cert: {check['without_cert'].get('status')})")
            proc.stop()
            return rec, None, None
        rec["valid"] = True
        rec["pids"] = proc.pids
        return rec, t, proc

    def _end(self, rec: Record, proc: Proc) -> Record:
        if not proc.alive():
            rec["valid"] = False
            rec["error"] = f"{rec['proxy']} exited during the run; log tail:\n{proc.log_tail()}"
            self.problems.append(f"{rec['proxy']} {rec['flavour']}-{rec['kind']}-{rec['rep']}: exited during the run")
        for name, ph in rec["phases"].items():
            if ph.get("errors") or ph.get("rc"):
                self.problems.append(f"{rec['proxy']} {rec['flavour']}-{rec['kind']}-{rec['rep']} {name}: "
                                     f"{ph.get('errors')} errors, rc {ph.get('rc')}: "
                                     f"{ph.get('last_error') or ph.get('output_tail', '')[-200:]}".strip())
        proc.stop()
        pause(0.5)
        return rec

    def main_run(self, proxy: str, flavour: str, rep: int) -> Record:
        """Handshakes, keep-alive requests, latency, memory: proxy pinned to the server core."""
        env, plan = self.env, self.plan
        rec, t, proc = self._begin(proxy, flavour, rep, "main", "main", 1, env.server_cpus, env.load_cpus)
        if t is None or proc is None:
            return rec
        return self._guarded(rec, proc, lambda: self._main_phases(rec, t, proc, flavour))

    def _guarded(self, rec: Record, proc: Proc, body: Callable[[], None]) -> Record:
        """Run the phases; whatever happens, the proxy is stopped and the record says why."""
        try:
            body()
        except Exception as e:  # a harness bug or a tool failure must not leave servers running
            rec["valid"] = False
            rec["error"] = f"harness error: {type(e).__name__}: {e}"
            self.problems.append(f"{rec['proxy']} {rec['flavour']}-{rec['kind']}-{rec['rep']}: {rec['error']}")
        except BaseException:  # interrupted: stop what we started, then let it propagate
            proc.stop()
            raise
        return self._end(rec, proc)

    def _main_phases(self, rec: Record, t: phases.Target, proc: Proc, flavour: str) -> None:
        plan = self.plan
        ph, m = rec["phases"], rec["metrics"]
        ph["warmup"] = phases.cgload(t, "warmup", "hs", 1, "-c", "4")
        pause(0.5)
        m["rss_idle"] = rss_kib(proc.pids) / 1024
        if plan.idle_conns and flavour == "ec":
            idle = phases.idle_rss(t, plan.idle_conns)
            ph["idle_conns"] = idle
            if idle["opened"] == plan.idle_conns:
                m["rss_1k"] = idle["rss_kib"] / 1024
                m["conn_kib"] = (idle["rss_kib"] - m["rss_idle"] * 1024) / plan.idle_conns
            else:
                ph["idle_conns"]["errors"] = idle["failed"] or 1
        hs = ph["hs"] = phases.cgload(t, "hs", "hs", plan.hs_s, "-c", "16")
        m["hs_rate"], m["hs_us"] = hs.get("rate"), hs.get("server_us_per_op")
        ka = ph["ka"] = phases.wrk(t, "ka", 32, plan.ka_s)
        m["ka_rps"], m["ka_us"] = ka.get("rate"), ka.get("server_us_per_op")
        m["ka_p50"], m["ka_p99"] = ka.get("p50_ms"), ka.get("p99_ms")
        c1 = ph["c1"] = phases.wrk(t, "c1", 1, plan.c1_s)
        m["c1_p50"], m["c1_p99"] = c1.get("p50_ms"), c1.get("p99_ms")
        for key, name in (("hs_rate", "hs"), ("ka_rps", "ka"), ("c1_p50", "c1")):
            if ph[name].get("errors") or not ph[name].get("ok"):
                m[key] = None  # a phase with errors is not a measurement
        # Last: the per-operation phases above are not measured in a process that has just
        # held (and closed) 10,000 connections, as the RSA runs and quick mode are not either.
        if plan.scale_conns and flavour == "ec" and rec["proxy"] in ("nginx", "certgate"):
            sc = ph["scale"] = phases.scale(t, plan.scale_conns)
            if sc["opened"] == plan.scale_conns and not sc.get("probe_errors") and sc.get("probe_ok"):
                m["rss_10k"] = sc["rss_kib"] / 1024
                m["scale_p50"], m["scale_p99"] = sc["p50_ms"], sc["p99_ms"]
            else:
                sc["errors"] = sc["failed"] or sc.get("probe_errors") or 1

    def stream_run(self, proxy: str, rep: int) -> Record:
        """WebSocket echo and large bodies against the streaming upstream (ECDSA PKI)."""
        env, plan = self.env, self.plan
        rec, t, proc = self._begin(proxy, "ec", rep, "stream", "stream", 1, env.server_cpus, env.load_cpus)
        if t is None or proc is None:
            return rec
        return self._guarded(rec, proc, lambda: self._stream_phases(rec, t))

    def _stream_phases(self, rec: Record, t: phases.Target) -> None:
        plan = self.plan
        ph, m = rec["phases"], rec["metrics"]
        ws = ph["ws"] = phases.cgload(t, "ws", "ws", plan.ws_s, "-c", "32", "-size", "64", "-path", "/ws",
                                          "-timeout", "10s")
        if ws.get("ok") and not ws.get("errors"):
            m["ws_rate"], m["ws_us"] = ws.get("rate"), ws.get("server_us_per_op")
        if plan.body_bytes:
            limit = 120.0
            for name, mode, path in (("dl", "get", "/big"), ("ul", "put", "/upload")):
                r = ph[name] = phases.cgload(t, name, mode, limit, "-n", str(plan.body_transfers),
                                             "-bytes", str(plan.body_bytes), "-path", path)
                if r.get("ok") and not r.get("errors"):
                    m[f"{name}_mbs"] = r.get("mb_per_s")

    def workers_run(self, workers: int, rep: int, again: int = 0) -> Record:
        """certgate keep-alive with ``workers`` processes; everything shares both cores.

        ``again`` numbers a further measurement of the same count in the same rep. Besides the
        rate and µs per request, it records how the certgate processes shared the work
        (``ka_split``: each process's share of certgate's CPU) and the cores certgate used."""
        env = self.env
        up = self.upstreams["main"]
        both = {int(c) for c in (env.both_cpus or "").split(",") if c} or set(range(os.cpu_count() or 1))
        saved = {p: os.sched_getaffinity(p) for p in up.pids}
        for p in saved:
            os.sched_setaffinity(p, both)
        try:
            rec, t, proc = self._begin("certgate", "ec", rep, f"workers{workers}", "main", workers,
                                       env.both_cpus, env.both_cpus, again)
            if t is None or proc is None:
                return rec

            def body() -> None:
                pause(0.5 * workers)
                rec["pids"] = proc.pids
                ka = rec["phases"]["ka"] = phases.wrk(t, "ka", 64, self.plan.workers_s, threads=2)
                if ka.get("ok") and not ka.get("errors"):
                    m = rec["metrics"]
                    m["ka_rps"], m["ka_us"] = ka.get("rate"), ka.get("server_us_per_op")
                    m["ka_cores"] = ka.get("server_util")
                    each = [c for c in ka.get("server_cpu_each", []) if c > 0.05 * max(ka["server_cpu_s"], 1e-9)]
                    if each:
                        m["ka_split_min"] = round(min(each) / sum(each), 3)  # 0.5 = an even split of 2
                        m["ka_busy_procs"] = len(each)

            return self._guarded(rec, proc, body)
        finally:
            for p, cpus in saved.items():
                try:
                    os.sched_setaffinity(p, cpus)
                except OSError:
                    pass
