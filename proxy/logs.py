"""Log observer for ``certgate run``: the ``[log]`` level and file of the config.

twistd calls :func:`observer_from_env` (``--logger=proxy.logs.observer_from_env``); it
reads the config named by ``CERTGATE_CONFIG``. A config it cannot read logs everything
to standard error (the service itself then reports the config problems).
"""

from __future__ import annotations

import os
import sys
from typing import IO

from twisted.logger import (FileLogObserver, FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate,
                            formatEventAsClassicLogText)
from zope.interface import implementer

from trust.escape import safe_lines, safe_text

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


def observer(level: str = "info", target: str = "-") -> ILogObserver:
    """A text observer writing to ``target`` (``-`` = stderr) at ``level`` and above."""
    stream: IO[str] = sys.stderr if target == "-" else open(target, "a", buffering=1, encoding="utf-8")
    pred = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level, LogLevel.info))
    return FilteringLogObserver(EscapingObserver(escaped_text_observer(stream)), [pred])


def escaped_text_observer(stream: IO[str]) -> ILogObserver:
    """Twisted's classic text lines, with any control or bidi character left in them escaped."""
    return FileLogObserver(stream, lambda event: safe_lines(formatEventAsClassicLogText(event) or ""))


_PLAIN = (int, float, bool, type(None))


@implementer(ILogObserver)
class EscapingObserver:
    """Passes events on with every field value escaped by :func:`trust.escape.safe_text`.

    Fields named ``log_*`` (the format string, the failure, the level ...) and numbers are
    passed as they are; any other value is turned into one line of printable text before the
    format string sees it, so a client's CR, LF or terminal escape cannot shape a log line.
    """

    def __init__(self, inner: ILogObserver) -> None:
        self._inner = inner

    def __call__(self, event: dict[str, object]) -> None:
        self._inner({k: v if k.startswith("log_") or isinstance(v, _PLAIN) else safe_text(v)
                     for k, v in event.items()})


def observer_from_env() -> ILogObserver:
    """The observer for the config in ``$CERTGATE_CONFIG`` (see module docstring)."""
    import configparser

    level, target = "info", "-"
    path = os.environ.get("CERTGATE_CONFIG")
    if path:
        cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        try:
            cp.read(path, encoding="utf-8")
            level = cp.get("log", "level", fallback="info").strip()
            target = cp.get("log", "file", fallback="-").strip() or "-"
            if target != "-" and not os.path.isabs(target):
                target = os.path.join(os.path.dirname(os.path.abspath(path)), target)
        except (configparser.Error, OSError, UnicodeDecodeError):
            pass
    return observer(level, target)
