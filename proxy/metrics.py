"""Tiny Prometheus-style counters and gauges, rendered as text exposition format 0.0.4.

Counters are plain objects with an ``inc()`` method so hot paths pay one attribute
increment. Nothing here is thread-safe beyond what the GIL gives ``+=`` on an int
attribute (the gateway is single-threaded per worker process).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    """One time series of a counter family; ``inc()`` adds to ``value``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (must be >= 0; not checked on the hot path)."""
        self.value += amount


class _Family:
    def __init__(self, name: str, help_text: str, kind: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_text
        self.kind = kind
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], Counter] = {}
        self.gauge_fn: Callable[[], Iterable[tuple[tuple[str, ...], float]]] | None = None

    def labels(self, *values: str) -> Counter:
        """The child series for these label values (created on first use)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"metric {self.name}: expected labels {self.labelnames}, got {values!r}")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Counter()
        return child


class Metrics:
    """A registry of counter families and callback gauges."""

    def __init__(self, prefix: str = "certgate_") -> None:
        self._prefix = prefix
        self._families: dict[str, _Family] = {}

    def counter(self, name: str, help_text: str, labelnames: tuple[str, ...] = ()) -> _Family:
        """Declare (or return the already declared) counter family ``prefix+name``."""
        return self._declare(name, help_text, "counter", labelnames)

    def gauge(self, name: str, help_text: str, labelnames: tuple[str, ...],
              fn: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        """A gauge whose series are read from ``fn()`` at render time: ``[(labels, value), ...]``."""
        fam = self._declare(name, help_text, "gauge", labelnames)
        fam.gauge_fn = fn

    def _declare(self, name: str, help_text: str, kind: str, labelnames: tuple[str, ...]) -> _Family:
        full = self._prefix + name
        if not _NAME.match(full) or not all(_LABEL.match(n) for n in labelnames):
            raise ValueError(f"invalid metric or label name: {full!r} {labelnames!r}")
        fam = self._families.get(full)
        if fam is None:
            fam = self._families[full] = _Family(full, help_text, kind, labelnames)
        elif fam.kind != kind or fam.labelnames != labelnames:
            raise ValueError(f"metric {full} already declared as {fam.kind} {fam.labelnames}")
        return fam

    def value(self, name: str, *labels: str) -> float:
        """The current value of a counter series (0 when never incremented); for tests and health."""
        fam = self._families.get(self._prefix + name)
        if fam is None:
            return 0.0
        if fam.gauge_fn is not None:
            return dict(fam.gauge_fn()).get(tuple(labels), 0.0)
        c = fam.children.get(tuple(labels))
        return c.value if c is not None else 0.0

    def render(self) -> bytes:
        """Prometheus text exposition of every family, sorted by name."""
        lines: list[str] = []
        for full in sorted(self._families):
            fam = self._families[full]
            lines.append(f"# HELP {full} {fam.help}")
            lines.append(f"# TYPE {full} {fam.kind}")
            if fam.gauge_fn is not None:
                try:
                    series = list(fam.gauge_fn())
                except Exception as e:  # a broken gauge must not break /metrics
                    lines.append(f"# error reading {full}: {type(e).__name__}")
                    series = []
            else:
                series = [(k, c.value) for k, c in fam.children.items()]
            for labels, value in sorted(series):
                if fam.labelnames:
                    lab = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(fam.labelnames, labels))
                    lines.append(f"{full}{{{lab}}} {value:g}")
                else:
                    lines.append(f"{full} {value:g}")
        return ("\n".join(lines) + "\n").encode("utf-8")
