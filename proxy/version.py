"""certgate's version, as installed (one place: the startup log line and the process metrics)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def certgate_version() -> str:
    """The installed distribution's version; ``(not installed)`` when running from a bare tree."""
    try:
        return version("certgate")
    except PackageNotFoundError:
        return "(not installed)"
