"""Where certgate's time goes: py-spy samples under keep-alive (and handshake) load.

py-spy records collapsed stacks ("frame;frame;frame count"); this module ranks
functions by self samples (the frame on top) and by inclusive samples (anywhere on
the stack), which is what the "where the time goes" list in the report shows.
"""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path
from typing import Any

from . import phases
from .procs import pause, pinned


def area(frame: str) -> str:
    """The part of the stack a frame ``func (path:line)`` belongs to."""
    path = frame.rpartition("(")[2].rstrip(")").rpartition(":")[0]
    for prefix, name in (("OpenSSL/", "pyOpenSSL/OpenSSL calls"), ("twisted/protocols/tls", "Twisted TLS memory BIO"),
                         ("twisted/internet/", "Twisted reactor, TCP, syscalls"), ("twisted/protocols/policies", "Twisted policies wrappers (timeouts)"),
                         ("twisted/python/", "Twisted reactor, TCP, syscalls"), ("httptools", "httptools parser")):
        if prefix in path:
            return name
    for pkg in ("proxy/", "trust/"):
        if path.startswith(pkg) or f"/{pkg}" in path:
            return "certgate " + pkg + path.split(pkg, 1)[1]
    return "other: " + (path.split("/")[0] if path else frame)


def top_frames(collapsed: str, n: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares of the most frequent frames, and self time by area."""
    selfc: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += k
        selfc[frames[-1]] += k
        areas[area(frames[-1])] += k
        for f in set(frames):
            incl[f] += k
    pct = lambda c: [(f, round(100 * v / total, 1)) for f, v in c.most_common(n)]  # noqa: E731
    # Inclusive time of certgate's own functions (the reactor frames above them are ~100 %).
    own = collections.Counter({f: v for f, v in incl.items() if area(f).startswith("certgate")})
    return {"samples": total, "areas": pct(areas), "self": pct(selfc), "inclusive_certgate": pct(own)}


def record(pyspy: Path, t: phases.Target, name: str, load_argv: list[str], seconds: float,
           env: dict[str, str], out: Path) -> dict[str, Any]:
    """Sample the server tree with py-spy while ``load_argv`` runs; returns the ranking."""
    raw = out / f"pyspy-{name}.txt"
    spy = subprocess.Popen(pinned(t.load_cpus, [str(pyspy), "record", "--pid", str(t.server.popen.pid),
                                                "--subprocesses", "--function", "--rate", "250", "--duration",
                                                str(int(seconds)), "--format", "raw", "--output", str(raw),
                                                "--nonblocking"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pause(1.0)
    subprocess.run(pinned(t.load_cpus, load_argv), capture_output=True, text=True, env=env, timeout=seconds + 60)
    try:
        log, _ = spy.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        log, _ = spy.communicate()
    if not raw.exists():
        return {"error": f"py-spy wrote nothing: {log[-500:]}"}
    return top_frames(raw.read_text())


def render(name: str, prof: dict[str, Any]) -> str:
    if "error" in prof:
        return f"#### {name}\n\n{prof['error']}\n"
    lines = [f"#### {name} ({prof['samples']} samples)", "", "| self % | area |", "|---|---|"]
    lines += [f"| {p} | {a} |" for a, p in prof["areas"][:12]]
    lines += ["", "| self % | function |", "|---|---|"]
    lines += [f"| {p} | `{f}` |" for f, p in prof["self"][:20]]
    lines += ["", "| inclusive % | certgate function |", "|---|---|"]
    lines += [f"| {p} | `{f}` |" for f, p in prof["inclusive_certgate"][:20]]
    return "\n".join(lines) + "\n"
