"""Processes the benchmark starts: placement, CPU and memory accounting, orderly stop.

Only processes started here are ever signalled, by their own PID. CPU comes from
/proc/PID/stat (utime + stime) summed over the process tree, memory from VmRSS.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pause(seconds: float) -> None:
    """Wait without burning CPU (the harness shares the load core)."""
    threading.Event().wait(seconds)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads); empty if the process is gone."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, as of now."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (gone processes count 0)."""
    ticks = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


def rss_kib(pids: Sequence[int]) -> int:
    """Sum of VmRSS over ``pids`` in KiB (shared pages are counted once per process)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), 0.3).close()
        return True
    except OSError:
        return False


def pinned(cpus: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run under ``taskset -c cpus`` (unchanged when cpus is None)."""
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


@dataclass
class Proc:
    """A started server process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    _logf: IO[bytes] = field(repr=False)

    @property
    def pids(self) -> list[int]:
        return tree(self.popen.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_port(self, port: int, timeout: float = 20.0) -> bool:
        """Poll until ``port`` accepts connections; False if the process died or time ran out."""
        for _ in range(int(timeout / 0.1)):
            if not self.alive():
                return False
            if port_open(port):
                return True
            pause(0.1)
        return False

    def log_tail(self, n: int = 2000) -> str:
        if not self._logf.closed:
            self._logf.flush()
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM this process (only it, by PID), then SIGKILL after ``grace`` seconds."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._logf.close()


def start(name: str, argv: Sequence[str], log: Path, cpus: str | None,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    """Start ``argv`` pinned to ``cpus`` with stdout+stderr into ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    logf = open(log, "ab")
    p = subprocess.Popen(pinned(cpus, argv), stdout=logf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    return Proc(name, p, log, logf)


def core_busy_seconds() -> dict[int, float]:
    """Busy (non-idle, non-iowait) CPU seconds per core since boot, from /proc/stat."""
    out: dict[int, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                out[int(name[3:])] = (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # drop idle, iowait
    return out


def wait_for_quiet(max_wait: float, threshold: float = 0.3, window: float = 1.0) -> tuple[float, float]:
    """Wait (up to ``max_wait`` s) until the machine's busy CPU over ``window`` is below ``threshold`` cores.

    Called between runs, when none of the benchmark's own processes is working, so what
    is busy belongs to other programs. Returns (seconds waited, last busy cores seen);
    it never fails: on a machine that stays busy it just gives up after ``max_wait``.
    """
    waited, busy = 0.0, 0.0
    while True:
        b0 = core_busy_seconds()
        pause(window)
        b1 = core_busy_seconds()
        busy = sum(b1[c] - b0.get(c, 0.0) for c in b1) / window
        waited += window
        if busy < threshold or waited >= max_wait:
            return waited, busy
