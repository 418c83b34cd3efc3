"""What the parts report to, as Protocols: the metrics registry and the audit log (typing only).

The gateway passes :class:`proxy.observe.metrics.Metrics` and :class:`proxy.observe.audit.Audit`;
tests pass their own. Every layer above ``proxy.observe`` may name these; each lists what the
code calls, not everything an implementation offers.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

__all__ = ["AuditSink", "MetricChild", "MetricFamily", "MetricsRegistry"]


class AuditSink(Protocol):
    """Where authentication decisions are recorded (one JSON line each)."""

    def record(self, event: str, decision: str, reason: str, **fields: Any) -> dict[str, Any]: ...


class MetricChild(Protocol):
    """One labelled series of a counter or histogram."""

    def inc(self, amount: float = 1.0) -> None: ...

    def observe(self, value: float) -> None: ...


class MetricFamily(Protocol):
    """A counter or histogram; ``labels(...)`` picks a series (no arguments: the only one)."""

    def labels(self, *values: str) -> Any: ...


class MetricsRegistry(Protocol):
    """The metrics registry the parts declare their counters, histograms and gauges in."""

    def counter(self, name: str, help_text: str, labelnames: tuple[str, ...] = ()) -> MetricFamily: ...

    def histogram(self, name: str, help_text: str, labelnames: tuple[str, ...] = (),
                  buckets: tuple[float, ...] = ...) -> MetricFamily: ...

    def gauge(self, name: str, help_text: str, labelnames: tuple[str, ...],
              fn: Callable[[], Iterable[tuple[tuple[str, ...], float]]], shared: bool = False) -> None: ...
