"""Log observer for ``certgate run``: the ``[log]`` level and file of the config.

twistd calls :func:`observer_from_env` (``--logger=proxy.logs.observer_from_env``); it
reads the config named by ``CERTGATE_CONFIG``. A config it cannot read logs everything
to standard error (the service itself then reports the config problems).
"""

from __future__ import annotations

import os
import sys
from typing import IO

from twisted.logger import (FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate,
                            textFileLogObserver)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


def observer(level: str = "info", target: str = "-") -> ILogObserver:
    """A text observer writing to ``target`` (``-`` = stderr) at ``level`` and above."""
    stream: IO[str] = sys.stderr if target == "-" else open(target, "a", buffering=1, encoding="utf-8")
    pred = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level, LogLevel.info))
    return FilteringLogObserver(textFileLogObserver(stream), [pred])


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
