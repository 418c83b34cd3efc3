"""The metrics registry: Prometheus counters, histograms and gauges through ``prometheus_client``.

Every part registers its series on the gateway's :class:`Metrics` (one per process):
``counter()``, ``histogram()`` and ``gauge()`` (a callback read at scrape time). Names get
the ``certgate_`` prefix; counters are exposed with ``_total``; durations are in seconds.

Workers (``[listen] workers`` > 1): the admin listener runs in the primary process only, so
the primary calls :func:`enable_multiprocess` before any metric exists; its folder is passed
to the workers in ``PROMETHEUS_MULTIPROC_DIR``. Counters and histograms are then summed
over every process by ``prometheus_client``'s multiprocess collector; per-process callback
gauges (open connections, tunnels, tracked sessions) are copied every second into
``livesum`` gauges (summed over live processes); gauges that are the same in every process
(certificate expiry, trust health) are read in the primary only (``shared=True``).
Process metrics (``process_*``) describe the primary process.
"""

from __future__ import annotations

import os
import platform
import re
from bisect import bisect_left
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# no `*_created` series: they double every counter and histogram, and the process start
# time (process_start_time_seconds) tells the same
disable_created_metrics()

GaugeFn = Callable[[], Iterable[tuple[tuple[str, ...], float]]]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
#: request/handshake/login latency buckets, seconds (from 1 ms to 1 min)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class _Noop:
    """Stands in for a metric when no registry is given (unit tests, tools)."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def labels(self, *values: str) -> "_Noop":
        return self


NOOP = _Noop()


def multiprocess_dir() -> str | None:
    """The shared metrics folder when this process is one of several workers, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def enable_multiprocess(folder: str) -> None:
    """Switch this process (and the workers it starts, through the environment) to shared files.

    Must run before any metric is created. Does not create or clean ``folder``.
    """
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    values.ValueClass = values.MultiProcessValue()


class _Family:
    """A metric family; ``labels(*values)`` returns the (cached) child with ``inc``/``observe``."""

    __slots__ = ("metric", "labelnames", "_children")

    def __init__(self, metric: Any, labelnames: tuple[str, ...]) -> None:
        self.metric = metric
        self.labelnames = labelnames
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"expected labels {self.labelnames}, got {values!r}")
            child = self.metric.labels(*values) if values or type(self.metric) is _FastMetric else self.metric
            self._children[values] = child
        return child


class _FastCounter:
    """A counter child updated without a lock: for series only the reactor thread touches."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class _FastHistogram:
    """A histogram child updated without a lock (reactor thread only): one bisect per observation.

    ``counts[i]`` counts observations in bucket ``i`` (``<= bounds[i]``, not cumulative), as
    ``prometheus_client.Histogram`` does; the last bound is ``+Inf``.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        if amount == amount:  # NaN falls in no bucket (as in prometheus_client)
            self.counts[bisect_left(self.bounds, amount)] += 1


class _FastMetric:
    """The parent of fast children: a collector of its own (exposed like ``Counter``/``Histogram``)."""

    def __init__(self, kind: str, name: str, help_text: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...] = ()) -> None:
        self.kind = kind
        self.name = name
        self.help_text = help_text
        self.labelnames = labelnames
        bounds = tuple(float(b) for b in buckets)
        if kind == "histogram" and (not bounds or bounds[-1] != float("inf")):
            bounds += (float("inf"),)
        self.bounds = bounds
        self.les = tuple(floatToGoString(b) for b in bounds)
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _FastHistogram(self.bounds) if self.kind == "histogram" else _FastCounter()
        return child

    def collect(self) -> Iterable[Any]:
        if self.kind == "counter":
            fam: Any = CounterMetricFamily(self.name, self.help_text, labels=self.labelnames)
            for values, c in list(self.children.items()):
                fam.add_metric(list(values), c.value)
        else:
            fam = HistogramMetricFamily(self.name, self.help_text, labels=self.labelnames)
            for values, h in list(self.children.items()):
                acc, buckets = 0, []
                for le, n in zip(self.les, h.counts):
                    acc += n
                    buckets.append((le, acc))
                fam.add_metric(list(values), buckets, h.sum)
        yield fam


class _Callbacks:
    """A collector yielding the callback gauges (read at scrape time)."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, tuple[str, ...], GaugeFn]] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (help_text, labelnames, fn) in sorted(self.gauges.items()):
            fam = GaugeMetricFamily(name, help_text, labels=labelnames)
            try:
                for labels, value in fn():
                    fam.add_metric(list(labels), float(value))
            except Exception:  # a broken gauge must not break /metrics; it shows no series
                pass
            yield fam


class Metrics:
    """The gateway's registry; safe to declare the same metric twice (the first one is returned)."""

    def __init__(self, prefix: str = "certgate_") -> None:
        self._prefix = prefix
        self.registry = CollectorRegistry(auto_describe=False)
        self.multiprocess = multiprocess_dir()
        self._families: dict[str, tuple[str, _Family]] = {}
        self._callbacks = _Callbacks()
        self._local_gauges: list[tuple[_Family, GaugeFn]] = []
        self._process: list[Any] = []  # process/platform collectors (the admin process's own)
        self.registry.register(self._callbacks)

    def _full(self, name: str) -> str:
        full = self._prefix + name
        if not _NAME.match(full):
            raise ValueError(f"invalid metric name {full!r}")
        return full

    def _declare(self, kind: str, name: str, make: Callable[[str], Any], labelnames: tuple[str, ...]) -> _Family:
        full = self._full(name)
        known = self._families.get(full)
        if known is not None:
            if known[0] != kind or known[1].labelnames != tuple(labelnames):
                raise ValueError(f"metric {full} already declared as {known[0]} {known[1].labelnames}")
            return known[1]
        fam = _Family(make(full), tuple(labelnames))
        self._families[full] = (kind, fam)
        return fam

    def counter(self, name: str, help_text: str, labelnames: tuple[str, ...] = (), *,
                reactor_only: bool = False) -> _Family:
        """A counter; ``name`` may end in ``_total`` (it is exposed with ``_total`` either way).

        ``reactor_only``: only the reactor thread updates it (per-request series), so its
        children skip ``prometheus_client``'s lock (not with workers: their files are shared).
        """
        base = name[:-6] if name.endswith("_total") else name
        if reactor_only and not self.multiprocess:
            return self._declare("counter", base, lambda full: self._fast("counter", full, help_text, labelnames),
                                 labelnames)
        return self._declare("counter", base, lambda full: Counter(full, help_text, labelnames,
                                                                  registry=self.registry), labelnames)

    def histogram(self, name: str, help_text: str, labelnames: tuple[str, ...] = (),
                  buckets: tuple[float, ...] = LATENCY_BUCKETS, *, reactor_only: bool = False) -> _Family:
        """A histogram (``name`` should end in ``_seconds`` or another base unit); ``reactor_only``
        as for :meth:`counter`."""
        if reactor_only and not self.multiprocess:
            return self._declare("histogram", name,
                                 lambda full: self._fast("histogram", full, help_text, labelnames, buckets),
                                 labelnames)
        return self._declare("histogram", name, lambda full: Histogram(full, help_text, labelnames,
                                                                      registry=self.registry, buckets=buckets),
                             labelnames)

    def _fast(self, kind: str, full: str, help_text: str, labelnames: tuple[str, ...],
              buckets: tuple[float, ...] = ()) -> _FastMetric:
        metric = _FastMetric(kind, full, help_text, tuple(labelnames), buckets)
        self.registry.register(metric)
        if not labelnames:
            metric.labels()  # an unlabelled series exists (at 0) from the start, as with prometheus_client
        return metric

    def gauge(self, name: str, help_text: str, labelnames: tuple[str, ...], fn: GaugeFn,
              shared: bool = False) -> None:
        """A gauge read from ``fn()`` -> ``[(label values, value), ...]``.

        ``shared``: every process would report the same value (read in the admin process
        only). Otherwise, with workers, the values of all live processes are summed.
        """
        full = self._full(name)
        if self.multiprocess and not shared:
            fam = self._declare("gauge", name, lambda f: Gauge(f, help_text, labelnames, registry=self.registry,
                                                                multiprocess_mode="livesum"), labelnames)
            self._local_gauges.append((fam, fn))
            return
        if full not in self._callbacks.gauges:
            self._callbacks.gauges[full] = (help_text, tuple(labelnames), fn)

    def refresh(self) -> None:
        """Copy per-process callback gauges into their shared files (multiprocess mode only)."""
        for fam, fn in self._local_gauges:
            try:
                for labels, value in fn():
                    fam.labels(*labels).set(float(value))
            except Exception:
                pass

    def add_process_metrics(self, version: str) -> None:
        """``process_*`` of this process and ``certgate_build_info`` (call in the admin process)."""
        from prometheus_client import PlatformCollector, ProcessCollector

        self._process = [ProcessCollector(registry=self.registry), PlatformCollector(registry=self.registry)]
        import twisted

        labels = ("version", "python", "twisted")
        vals = (version, platform.python_version(), twisted.__version__)
        self.gauge("build_info", "certgate's version and runtime (always 1)", labels, lambda: [(vals, 1.0)],
                   shared=True)

    def value(self, name: str, *labels: str) -> float:
        """The current value of a series in this process (0 when absent); for tests and health."""
        full = self._prefix + name
        cb = self._callbacks.gauges.get(full)
        if cb is not None:
            return dict((tuple(k), float(v)) for k, v in cb[2]()).get(tuple(labels), 0.0)
        base = full[:-6] if full.endswith("_total") else full
        entry = self._families.get(base)
        if entry is None:
            return 0.0
        sample = base + "_total" if entry[0] == "counter" else full
        v = self.registry.get_sample_value(sample, dict(zip(entry[1].labelnames, labels)))
        return float(v or 0.0)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (all processes' with workers)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        self.refresh()
        reg = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(reg, path=self.multiprocess)
        reg.register(self._callbacks)
        for c in self._process:
            reg.register(c)
        return generate_latest(reg)
