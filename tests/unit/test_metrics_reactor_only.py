"""Reactor-only metric series (no lock per update) are exposed exactly like prometheus_client's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.observe.metrics import Metrics


def _exercise(m: Metrics, fast: bool) -> bytes:
    h = m.histogram("req_seconds", "Request time", ("route", "code_class"), reactor_only=fast)
    for v in (0.0005, 0.001, 0.0012, 0.3, 59.0, 100.0):
        h.labels("default", "2xx").observe(v)
    h.labels("other", "5xx").observe(0.02)
    c = m.counter("decisions_total", "Decisions", ("outcome",), reactor_only=fast)
    c.labels("forward").inc()
    c.labels("forward").inc(2.5)
    m.counter("plain_total", "Unlabelled, never touched", reactor_only=fast)
    m.histogram("plain_seconds", "Unlabelled histogram", reactor_only=fast).labels().observe(0.004)
    m.counter("empty_total", "Labelled, no series yet", ("a",), reactor_only=fast)
    return m.render()


def test_reactor_only_series_render_like_locked_ones() -> None:
    locked, fast = _exercise(Metrics(), False), _exercise(Metrics(), True)
    assert b'certgate_req_seconds_bucket{code_class="2xx",le="0.001",route="default"} 2.0' in fast
    assert b"certgate_plain_total 0.0" in fast
    assert fast == locked


def test_reactor_only_values_are_readable_and_counters_refuse_negative_steps() -> None:
    m = Metrics()
    _exercise(m, True)
    assert m.value("decisions_total", "forward") == 3.5
    assert m.value("plain_total") == 0.0
    with pytest.raises(ValueError):
        m.counter("decisions_total", "Decisions", ("outcome",), reactor_only=True).labels("forward").inc(-1)


def test_workers_keep_prometheus_client_series(tmp_path: Path) -> None:
    """With workers the series live in shared files: reactor_only changes nothing then."""
    m = Metrics()
    m.multiprocess = str(tmp_path)
    fam = m.counter("shared_total", "Shared", ("outcome",), reactor_only=True)
    assert type(fam.metric).__name__ == "Counter"
