"""Log observers for ``certgate run`` and ``twistd certgate``: ``[log]`` level, file and JSON file.

twistd calls :func:`observer_from_env` (``--logger=proxy.observe.logs.observer_from_env``); it
reads the config named by ``CERTGATE_CONFIG``. A config it cannot read logs everything
to standard error (the service itself then reports the config problems). Files are
:class:`proxy.observe.logfiles.LogFile` (0640, reopened on SIGUSR1).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import (FileLogObserver, FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate,
                            formatEventAsClassicLogText, jsonFileLogObserver)
from zope.interface import implementer

from proxy.clock import rfc3339
from proxy.observe.logfiles import open_log
from trust.escape import safe_lines, safe_text

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


@implementer(ILogObserver)
class _Fanout:
    def __init__(self, observers: list[Any]) -> None:
        self._observers = observers

    def __call__(self, event: dict[str, Any]) -> None:
        for o in self._observers:
            o(event)


def _rfc3339(when: float | None) -> str:
    return rfc3339(when) if when is not None else "-"


def text_observer(stream: Any) -> ILogObserver:
    """Twisted's classic text lines, stamped with RFC 3339 UTC times (``2026-12-01T21:00:00.123Z``),
    with any control or bidi character left in them escaped (newlines of tracebacks stay)."""
    return FileLogObserver(stream, lambda event: safe_lines(formatEventAsClassicLogText(event, formatTime=_rfc3339)
                                                            or ""))


def observer(level: str = "info", target: str = "-", json_target: str = "") -> ILogObserver:
    """Text to ``target`` (``-`` = stderr) and, if given, JSON lines to ``json_target``, at ``level`` and up."""
    observers: list[Any] = [text_observer(open_log(target))]
    if json_target:
        observers.append(jsonFileLogObserver(open_log(json_target), recordSeparator=""))
    pred = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level, LogLevel.info))
    return FilteringLogObserver(EscapingObserver(_Fanout(observers)), [pred])


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

    level, target, json_target = "info", "-", ""
    path = os.environ.get("CERTGATE_CONFIG")
    if path:
        cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        try:
            cp.read(path, encoding="utf-8")
            level = cp.get("log", "level", fallback="info").strip()
            target = cp.get("log", "file", fallback="-").strip() or "-"
            json_target = cp.get("log", "json_file", fallback="").strip()
            base = os.path.dirname(os.path.abspath(path))
            if target != "-" and not os.path.isabs(target):
                target = os.path.join(base, target)
            if json_target and json_target != "-" and not os.path.isabs(json_target):
                json_target = os.path.join(base, json_target)
        except (configparser.Error, OSError, UnicodeDecodeError):
            pass
    try:
        return observer(level, target, json_target)
    except OSError as e:  # an unwritable log file: say so on stderr and log there
        import sys

        print(f"certgate: [log] file: cannot open {e.filename}: {e.strerror}; logging to standard error",
              file=sys.stderr)
        return observer(level, "-")
