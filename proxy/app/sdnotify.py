"""systemd's notify protocol (``Type=notify``): one datagram per state change to ``$NOTIFY_SOCKET``.

:func:`notify` sends ``READY=1``, ``STOPPING=1``, ``WATCHDOG=1``, ``STATUS=...``; it does
nothing when ``$NOTIFY_SOCKET`` is unset (not under systemd) and never raises (a lost
datagram only delays systemd's view). :func:`watchdog_interval` is half of
``$WATCHDOG_USEC`` when the watchdog is meant for this process, else None.
"""

from __future__ import annotations

import os
import socket


def notify(message: str, environ: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    """Send ``message`` (``KEY=VALUE`` lines) to ``$NOTIFY_SOCKET``; True when it was sent."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address  # '@': the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(1.0)
            s.sendto(message.encode("utf-8"), target)
        return True
    except OSError:
        return False


def watchdog_interval(environ: "os._Environ[str] | dict[str, str] | None" = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WatchdogSec``), or None without a watchdog."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6
