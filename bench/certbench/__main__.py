"""Entry point: python -m certbench --out DIR [--quick|--full] (normally via bench/run.sh)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import ceiling, configs, phases, report, sessionmode
from .pki import make_pki
from .procs import Proc, start
from . import runs
from .runs import FULL, QUICK, Env, Runner


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def versions(env: Env) -> dict[str, str]:
    def sh(*argv: str) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else ""
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unavailable: {e}"

    import cryptography
    import OpenSSL
    import twisted

    return {
        "nginx": sh("nginx", "-v"), "openssl": sh("openssl", "version"), "wrk": sh("wrk", "-v"),
        "go": sh("go", "version"), "python": platform.python_version(), "twisted": twisted.__version__,
        "pyopenssl": OpenSSL.__version__, "cryptography": cryptography.__version__,
        "wheel_openssl": OpenSSL.SSL.OpenSSL_version(OpenSSL.SSL.OPENSSL_VERSION).decode(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"),
        "nproc": str(os.cpu_count()), "kernel": platform.release(),
        "certgate": " ".join(env.certgate) if env.certgate else "STAND-IN: nginx in the certgate slot",
        "certgate_commit": sh("git", "-C", str(env.root), "describe", "--always", "--dirty"),
    }


def start_upstreams(env: Env) -> dict[str, Proc]:
    d = env.out / "run" / "upstream"
    conf = configs.nginx_upstream(d, env.ports.upstream)
    main = start("upstream", ["nginx", "-c", str(conf), "-p", str(d)], env.out / "logs" / "upstream.log",
                 env.server_cpus)
    stream = start("upstream-stream", [sys.executable, str(Path(__file__).parent.parent / "upstream_stream.py"),
                                       str(env.ports.stream)], env.out / "logs" / "upstream-stream.log",
                   env.server_cpus)
    for p, port in ((main, env.ports.upstream), (stream, env.ports.stream)):
        if not p.wait_port(port):
            main.stop()
            stream.stop()
            raise SystemExit(f"{p.name} did not start on {port}:\n{p.log_tail()}")
    return {"main": main, "stream": stream}


def profile_certgate(env: Env, plan_s: float, upstreams: dict[str, Proc]) -> str:
    """py-spy under keep-alive, handshake and WebSocket load (certgate, ECDSA)."""
    from . import profile
    from .runs import start_proxy, validate

    pyspy = env.root / ".venv" / "bin" / "py-spy"
    if not pyspy.exists():
        return "py-spy is not installed in .venv (bench/run.sh --profile installs it)\n"
    proc, port = start_proxy(env, "certgate", "ec", env.ports.upstream, 1, "ec-profile", env.server_cpus)
    out = []
    try:
        if not proc.wait_port(port):
            return f"certgate did not start for profiling:\n{proc.log_tail()}\n"
        t = phases.Target(proc, port, [upstreams["main"]], env.out / "pki" / "ec", env.cgload, env.shim,
                          env.load_cpus)
        if not validate(t)["ok"]:
            return "certgate failed the validity check; not profiled\n"
        d = max(5, int(plan_s))
        ka = ["wrk", "-t1", "-c32", f"-d{d + 1}s", t.url()]
        prof = profile.record(pyspy, t, "ka", ka, d, t.wrk_env(), env.out)
        out.append(profile.render("keep-alive requests (wrk -c32)", prof))
        hs = t.cgload_argv("hs", "-c", "16", "-d", f"{d + 1}s")
        prof2 = profile.record(pyspy, t, "hs", hs, d, t.go_env(), env.out)
        out.append(profile.render("full handshakes (cgload hs -c16)", prof2))
    finally:
        proc.stop()
    # WebSocket tunnels: a second start, in front of the streaming upstream (as the stream runs).
    proc, port = start_proxy(env, "certgate", "ec", env.ports.stream, 1, "ec-profile-ws", env.server_cpus)
    prof3: dict[str, Any] = {"error": "not run"}
    try:
        if not proc.wait_port(port):
            out.append(f"certgate did not start for the WebSocket profile:\n{proc.log_tail()}\n")
        else:
            t = phases.Target(proc, port, [upstreams["stream"]], env.out / "pki" / "ec", env.cgload, env.shim,
                              env.load_cpus)
            ws = t.cgload_argv("ws", "-c", "32", "-size", "64", "-path", "/ws", "-d", f"{d + 1}s", "-timeout", "10s")
            prof3 = profile.record(pyspy, t, "ws", ws, d, t.go_env(), env.out)
            out.append(profile.render("WebSocket 64 B messages (cgload ws -c32)", prof3))
    finally:
        proc.stop()
    (env.out / "profile.json").write_text(json.dumps({"ka": prof, "hs": prof2, "ws": prof3}, indent=1))
    return "\n".join(out)


def resummarize(out: Path) -> int:
    """Print the table of an earlier run again, from OUT/results.json."""
    try:
        data = json.loads((out / "results.json").read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read {out / 'results.json'}: {e}")
    text, _ = report.render(report.summarize(data["runs"], data.get("ceiling")),
                            f"certgate vs nginx, {data['meta']['mode']} mode (re-printed from {out})")
    print(text + "".join(f"  - {p}\n" for p in data.get("problems", [])))
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--summarize":
        return resummarize(Path(sys.argv[2]))
    ap = argparse.ArgumentParser(prog="certbench", description=__doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 rep, short phases, ECDSA only (< 2 min)")
    mode.add_argument("--full", action="store_true", help="3 interleaved reps, every phase (default)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--root", required=True, type=Path, help="the repository")
    ap.add_argument("--tools", required=True, type=Path, help="folder with cgload and certinject.so")
    ap.add_argument("--reps", type=int, help="override the number of repetitions")
    ap.add_argument("--scale", type=int, help="idle connections of the scale phase (0: skip; full: 10000)")
    ap.add_argument("--bodies", type=int,
                    help="MiB per large-body transfer (0: skip; full: 256; quick: 0), 2 transfers each way")
    ap.add_argument("--flavours", help="override the key flavours, e.g. ec or ec,rsa")
    ap.add_argument("--standin", action="store_true", help="run nginx in the certgate slot (harness development)")
    ap.add_argument("--profile", action="store_true", help="also sample certgate with py-spy")
    ap.add_argument("--sessions-only", action="store_true",
                    help="only the session-mode rows (cookie + store lookup per request; SQLite, Redis)")
    ap.add_argument("--no-floors", dest="floors", action="store_false",
                    help="skip the Python-floor control rows (bench/floor.py)")
    ap.add_argument("--port-base", type=int, default=19000,
                    help="first candidate port base (ports base+80, +81, +443, +451; next base +1000 if busy)")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--load-cpus", default="1")
    a = ap.parse_args()

    plan = QUICK if a.quick else FULL
    if a.reps:
        plan = dataclasses.replace(plan, reps=a.reps)
    if a.scale is not None:
        plan = dataclasses.replace(plan, scale_conns=a.scale)
    if a.bodies is not None:
        if a.bodies < 0:
            raise SystemExit("--bodies: a size in MiB, 0 or more")
        plan = dataclasses.replace(plan, body_bytes=a.bodies << 20, body_transfers=max(plan.body_transfers, 2))
    if a.flavours:
        bad = set(a.flavours.split(",")) - {"ec", "rsa"}
        if bad:
            raise SystemExit(f"--flavours: unknown {', '.join(sorted(bad))} (known: ec, rsa)")
        plan = dataclasses.replace(plan, flavours=tuple(a.flavours.split(",")))
    out = a.out.resolve()
    for sub in ("pki", "run", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    certgate_bin = a.root / ".venv" / "bin" / "certgate"
    if not a.standin and not certgate_bin.exists():
        raise SystemExit(f"{certgate_bin} not found: run `make` first (it installs certgate into .venv)")
    ncpu = os.cpu_count() or 1
    server_cpus, load_cpus = (a.server_cpus, a.load_cpus) if ncpu >= 2 else (None, None)
    env = Env(out, a.root.resolve(), [] if a.standin else [str(certgate_bin)], a.tools / "cgload",
              a.tools / "certinject.so", server_cpus, load_cpus,
              f"{a.server_cpus},{a.load_cpus}" if ncpu >= 2 else None, configs.choose_ports(a.port_base))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # inherited by the servers
    if load_cpus:
        os.sched_setaffinity(0, {int(c) for c in load_cpus.split(",")})

    # SIGTERM (e.g. make interrupted) unwinds like Ctrl-C, so every started process is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    t_start = time.monotonic()
    log(f"certgate bench, {plan.name} mode, {plan.reps} rep(s), flavours {','.join(plan.flavours)}; out {out}")
    if a.standin:
        log("WARNING: --standin: the certgate column is a second nginx, not certgate")
    for fl in plan.flavours:
        make_pki(out / "pki", fl)
    log("crypto ceiling (openssl speed + cryptography wheel)")
    ceil = ceiling.measure(plan.ceiling_s, load_cpus)
    upstreams = start_upstreams(env)
    runner = Runner(env, plan, upstreams)
    records: list[dict[str, Any]] = []
    profile_md = ""

    def note(recs: list[dict[str, Any]]) -> None:
        for rec in recs:
            records.append(rec)
            m = {k: round(v, 2) for k, v in rec["metrics"].items() if isinstance(v, (int, float))}
            state = "valid" if rec["valid"] else ("DISCARDED" if rec.get("discarded") else "INVALID")
            why = rec.get("discarded") or rec.get("error", "")
            log(f"   {rec['proxy']:8} {rec['flavour']} {rec['kind']:8} rep {rec['rep']}: {state} "
                + json.dumps(m) + ("" if rec["valid"] else " " + why[:300]))

    session_rows: list[dict[str, Any]] = []
    try:
        for rep in range(1, 0 if a.sessions_only else plan.reps + 1):
            order = ["nginx", "certgate"] if rep % 2 else ["certgate", "nginx"]  # interleaved
            floors = ["floor-static", "floor-fwd"] if rep % 2 else ["floor-fwd", "floor-static"]
            for fl in plan.flavours:
                for proxy in (order[:1] + floors + order[1:]) if a.floors else order:
                    log(f"rep {rep} {fl} {proxy}: handshakes, keep-alive, latency, memory")
                    note(runner.clean(lambda: runner.main_run(proxy, fl, rep)))
            for proxy in order:
                log(f"rep {rep} ec {proxy}: WebSocket" + (", large bodies" if plan.body_bytes else ""))
                note(runner.clean(lambda: runner.stream_run(proxy, rep)))
            pair = (1, 2) if rep % 2 else (2, 1)
            for k in range(plan.workers_pairs):  # alternated: 1,2 then 2,1 ...
                for w in (pair if k % 2 == 0 else pair[::-1]):
                    log(f"rep {rep} certgate workers={w} (both cores)")
                    note(runner.clean(lambda: runner.workers_run(w, rep, k)))
        if not a.standin:
            log("session mode: keep-alive requests with a session cookie (certificate-only, SQLite, Redis)")
            session_rows = sessionmode.run(env, plan.ka_s, upstreams["main"])
            for r in session_rows:
                log(f"   {r['mode']:18} {'valid' if r['valid'] else 'INVALID'} "
                    + json.dumps({k: r.get(k) for k in ("rate", "us", "p99_ms", "errors")}))
        if a.profile:
            log("profiling certgate with py-spy")
            profile_md = profile_certgate(env, max(10.0, plan.ka_s), upstreams)
    finally:
        for p in upstreams.values():
            p.stop()

    s_text, s_md = sessionmode.render(session_rows)
    if a.sessions_only:
        (out / "results.json").write_text(json.dumps({"session_mode": session_rows}, indent=1, default=str))
        (out / "results.md").write_text(s_md)
        print()
        print(s_text)
        return 0 if session_rows and all(r["valid"] for r in session_rows) else 2
    lines = report.summarize(records, ceil)
    title = (f"certgate vs nginx, {plan.name} mode: median [min-max] of {plan.reps} interleaved rep(s); "
             f"server+upstream on core {server_cpus}, load on core {load_cpus}")
    if a.standin:
        title += "  (STAND-IN: certgate column is nginx)"
    text, md = report.render(lines, title)
    ver = versions(env)
    notes = [
        f"certgate {ver['certgate_commit']} (pyOpenSSL {ver['pyopenssl']}, {ver['wheel_openssl']}); "
        f"{ver['nginx'].replace('nginx version: ', '')} ({ver['openssl'].split(' (')[0]}); {ver['cpu']}, "
        f"{ver['nproc']} cores.",
        "↑ higher is better, ↓ lower is better; the ratio is always certgate/nginx.",
        "µs figures are CPU of the proxy's own processes (/proc) per operation; the upstream is not included.",
        "Ceiling: system OpenSSL for nginx, the cryptography wheel's OpenSSL for certgate; "
        "'X at N%' = share of its measured µs per handshake that is public-key work.",
        "workers row: certgate, upstream and wrk -t2 -c64 all share cores "
        f"{env.both_cpus} (no per-process pinning), same for workers=1 and workers=2; "
        "both use a SQLite session store (workers > 1 requires a shared store).",
        report.interference(records),
    ]
    problems = sorted(set(runner.problems))
    text += "\n" + "\n".join(notes) + "\n"
    md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if problems:
        text += "\nProblems:\n" + "\n".join(f"  - {p}" for p in problems) + "\n"
        md += "\n**Problems:**\n\n" + "\n".join(f"- {p}" for p in problems) + "\n"
    if session_rows:
        text += "\n" + s_text
        md += "\n" + s_md
    if profile_md:
        md += "\n### Where certgate's time goes (py-spy)\n\n" + profile_md
    meta = {"mode": plan.name, "plan": dataclasses.asdict(plan), "versions": ver,
            "ports": dataclasses.asdict(env.ports) | {"all": env.ports.all()}, "server_cpus": server_cpus, "load_cpus": load_cpus, "standin": a.standin,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": round(time.monotonic() - t_start, 1)}
    (out / "results.json").write_text(json.dumps({"meta": meta, "ceiling": ceil, "table": lines,
                                                  "problems": problems, "runs": records,
                                                  "session_mode": session_rows}, indent=1, default=str))
    (out / "results.md").write_text(md)
    print()
    print(text)
    if profile_md:
        print(profile_md)
    log(f"done in {time.monotonic() - t_start:.0f} s; results in {out}/results.md and results.json")
    valid = {r["proxy"] for r in records if r["valid"] and r["kind"] == "main"}
    if a.floors and not set(runs.FLOORS) <= valid:
        return 2
    return 0 if {"nginx", "certgate"} <= valid else 2


if __name__ == "__main__":
    sys.exit(main())
