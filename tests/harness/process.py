"""Child processes of the tests: start one and wait until it listens, stop it for sure.

Every process a test starts is stopped with :func:`stop_process` (SIGTERM, a deadline, then
SIGKILL), so a hung child cannot outlive its test. Started in its own session, a whole process
group (certgate's workers, cockpit-ws's bridges) is signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import IO, Callable, Sequence

from tests.harness.wait import port_open, wait_for


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0, *, group: bool = False,
                 continue_first: bool = False) -> int | None:
    """Terminate ``proc`` (its process group when ``group``) and wait; SIGKILL after ``timeout`` s.

    ``continue_first`` sends SIGCONT first (a stopped process cannot act on SIGTERM). Returns the
    exit status (None when there was no process). Never raises for a process that is already gone.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        def send(sig: int) -> None:
            try:
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            except ProcessLookupError:
                pass

        if continue_first:
            send(signal.SIGCONT)
        send(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait()
    return proc.returncode


def read_log(path: Path) -> str:
    """The text of a log file ("" when it does not exist yet)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def wait_started(proc: subprocess.Popen[bytes], ready: Callable[[], object], timeout: float, what: str,
                 log: Callable[[], str]) -> None:
    """Poll ``ready`` until it is true. RuntimeError with the end of ``log()`` when ``proc`` exits
    first or ``timeout`` seconds pass (the process is left as it is: the caller stops it)."""
    exited: list[int] = []

    def up() -> object:
        code = proc.poll()
        if code is not None:
            exited.append(code)
            return True
        return ready()

    try:
        wait_for(up, timeout, what)
    except AssertionError as e:
        raise RuntimeError(f"{e}\n--- log ---\n{log()[-4000:]}") from None
    if exited:
        raise RuntimeError(f"exited with {exited[0]} while waiting for {what}\n--- log ---\n{log()[-4000:]}")


class Logged:
    """A child process whose stdout and stderr go to ``log_path``, in a session of its own.

    :meth:`wait_until` polls a condition and fails (RuntimeError with the log) when the process
    exits first or the deadline passes; :meth:`stop` stops the whole process group and closes the log.
    """

    def __init__(self, argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.log_path = Path(log_path)
        self._log: IO[bytes] = open(self.log_path, "ab")
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            list(argv), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        self.name = Path(argv[0]).name

    def log(self) -> str:
        return read_log(self.log_path)

    def wait_until(self, cond: Callable[[], object], timeout: float, what: str) -> None:
        """:func:`wait_started` for this process; it is stopped when that fails."""
        try:
            wait_started(self.proc, cond, timeout, what, self.log)
        except RuntimeError:
            self.stop()
            raise

    def wait_listening(self, port: int, timeout: float, what: str) -> None:
        """:meth:`wait_until` a TCP connection to 127.0.0.1:``port`` succeeds."""
        self.wait_until(lambda: port_open(port), timeout, what)

    def stop(self, timeout: float = 10.0, *, continue_first: bool = False) -> int | None:
        """Stop the process group (see :func:`stop_process`); returns the exit status."""
        code = stop_process(self.proc, timeout, group=True, continue_first=continue_first)
        if not self._log.closed:
            self._log.close()
        return code

