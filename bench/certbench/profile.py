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


def top_frames(collapsed: str, n: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares of the most frequent frames."""
    selfc: collections.Counter[str] = collections.Counter()
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
        for f in set(frames):
            incl[f] += k
    pct = lambda c: [(f, round(100 * v / total, 1)) for f, v in c.most_common(n)]  # noqa: E731
    return {"samples": total, "self": pct(selfc), "inclusive": pct(incl)}


def record(pyspy: Path, t: phases.Target, name: str, load_argv: list[str], seconds: float,
           env: dict[str, str], out: Path) -> dict[str, Any]:
    """Sample the server tree with py-spy while ``load_argv`` runs; returns the ranking."""
    raw = out / f"pyspy-{name}.txt"
    spy = subprocess.Popen(pinned(t.load_cpus, [str(pyspy), "record", "--pid", str(t.server.popen.pid),
                                                "--subprocesses", "--rate", "250", "--duration",
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
    lines = [f"#### {name} ({prof['samples']} samples)", "", "| self % | frame |", "|---|---|"]
    lines += [f"| {p} | `{f}` |" for f, p in prof["self"][:20]]
    lines += ["", "| inclusive % | frame |", "|---|---|"]
    lines += [f"| {p} | `{f}` |" for f, p in prof["inclusive"][:25]]
    return "\n".join(lines) + "\n"
