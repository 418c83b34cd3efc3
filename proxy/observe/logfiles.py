"""Log files the gateway appends to: created 0640, reopened on SIGUSR1 (logrotate without copytruncate).

:func:`open_log` returns a :class:`LogFile` (or standard error for ``-``); every LogFile
opened in the process is reopened by :func:`reopen_all`, which the service calls on
``SIGUSR1``. A file that cannot be reopened keeps the old handle and the error is returned.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import IO, Any

_OPEN: "weakref.WeakSet[LogFile]" = weakref.WeakSet()
MODE = 0o640


class LogFile:
    """An append-only text file; ``buffered`` ones are flushed by :meth:`flush` (the caller's timer)."""

    #: a buffered file writes once it holds this many characters (and on every flush)
    BUFFER = 65536

    def __init__(self, path: str, buffered: bool = False) -> None:
        self.path = path
        self.buffered = buffered
        self._lock = threading.Lock()
        self._f = self._open()
        self._buf: list[str] = []
        self._size = 0
        _OPEN.add(self)

    def _open(self) -> IO[str]:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
        return os.fdopen(fd, "a", buffering=65536 if self.buffered else 1, encoding="utf-8")

    def write(self, text: str) -> int:
        if not self.buffered:
            return self._f.write(text)
        self._buf.append(text)
        self._size += len(text)
        if self._size >= self.BUFFER:
            self.flush()
        return len(text)

    def flush(self) -> None:
        """Write what is buffered in one write(2) (whole lines: workers appending never interleave)."""
        try:
            if self._buf:
                data = "".join(self._buf).encode("utf-8")
                self._buf.clear()
                self._size = 0
                fd = self._f.fileno()
                while data:
                    data = data[os.write(fd, data):]
            else:
                self._f.flush()
        except (OSError, ValueError):
            pass

    def reopen(self) -> None:
        """Open the path again (a new file if it was renamed away); raises OSError, keeping the old one."""
        new = self._open()
        self.flush()
        with self._lock:
            old, self._f = self._f, new
        try:
            old.close()
        except OSError:
            pass

    def close(self) -> None:
        self.flush()
        _OPEN.discard(self)
        try:
            self._f.close()
        except OSError:
            pass


def open_log(target: str, buffered: bool = False) -> Any:
    """``-``: standard error; else a :class:`LogFile` at ``target`` (an absolute path)."""
    if target == "-":
        return sys.stderr
    return LogFile(target, buffered)


def reopen_all() -> list[str]:
    """Reopen every open LogFile; returns one line per file that failed (path: reason)."""
    errors = []
    for f in list(_OPEN):
        try:
            f.reopen()
        except OSError as e:
            errors.append(f"{f.path}: {e.strerror}")
    return errors


def flush_all() -> None:
    for f in list(_OPEN):
        f.flush()
