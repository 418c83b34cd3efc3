"""Turn run records into ONE table: medians, [min-max], certgate/nginx ratios, targets.

A run record is a dict with "proxy", "flavour", "rep", "kind", "valid" and "metrics"
(name -> number). Only valid runs count. The same table is printed, written as
Markdown (results.md) and, with every raw record, as JSON (results.json).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

Record = dict[str, Any]

#: the Python-floor control rows (bench/floor.py): answering itself, forwarding
FLOORS = ("floor-static", "floor-fwd")


@dataclass(frozen=True)
class Row:
    """One line of the table: ``metric`` from runs of ``kind``/``flavour``."""

    metric: str
    label: str
    flavour: str
    higher_is_better: bool
    target: str = ""
    check: Callable[[float | None, float | None], bool | None] | None = None
    kind: str = "main"


def _ratio_at_least(x: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda n, c: None if not (n and c) else c / n >= x


def _ratio_at_most(x: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda n, c: None if not (n and c) else c / n <= x


def _delta_at_most(x: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda n, c: None if n is None or c is None else c - n <= x


ROWS: list[Row] = [
    Row("hs_rate", "full mTLS handshakes/s (c=16) ↑", "ec", True, ">= 0.8x", _ratio_at_least(0.8)),
    Row("hs_us", "server CPU µs per full handshake ↓", "ec", False),
    Row("ka_rps", "keep-alive requests/s (wrk c=32) ↑", "ec", True, ">= 0.6x", _ratio_at_least(0.6)),
    Row("ka_us", "server CPU µs per keep-alive request ↓", "ec", False),
    Row("ka_p50", "latency p50 ms at c=32 ↓", "ec", False),
    Row("ka_p99", "latency p99 ms at c=32 ↓", "ec", False),
    Row("c1_p50", "latency p50 ms at c=1 ↓", "ec", False, "<= +0.1 ms", _delta_at_most(0.1)),
    Row("c1_p99", "latency p99 ms at c=1 ↓", "ec", False),
    Row("rss_idle", "RSS MiB idle ↓", "ec", False),
    Row("rss_1k", "RSS MiB with 1,000 idle mTLS conns ↓", "ec", False),
    Row("conn_kib", "KiB per idle mTLS connection ↓", "ec", False, "<= 1.3x", _ratio_at_most(1.3)),
    Row("rss_10k", "RSS MiB with 10,000 idle mTLS conns ↓", "ec", False),
    Row("scale_p50", "new client p50 ms with 10,000 idle conns ↓", "ec", False),
    Row("scale_p99", "new client p99 ms with 10,000 idle conns ↓", "ec", False, "< 100 ms",
        lambda n, c: None if c is None else c < 100),
    Row("ws_rate", "WebSocket messages/s (64 B echo, 32 conns) ↑", "ec", True, ">= 0.7x", _ratio_at_least(0.7),
        kind="stream"),
    Row("ws_us", "server CPU µs per WebSocket message ↓", "ec", False, kind="stream"),
    Row("dl_mbs", "download MB/s (256 MiB body, or --bodies) ↑", "ec", True, kind="stream"),
    Row("ul_mbs", "upload MB/s (256 MiB body, or --bodies) ↑", "ec", True, ">= 0.8x", _ratio_at_least(0.8), kind="stream"),
    Row("hs_rate", "full mTLS handshakes/s (c=16) ↑", "rsa", True, ">= 0.8x", _ratio_at_least(0.8)),
    Row("hs_us", "server CPU µs per full handshake ↓", "rsa", False),
    Row("ka_rps", "keep-alive requests/s (wrk c=32) ↑", "rsa", True, ">= 0.6x", _ratio_at_least(0.6)),
    Row("ka_us", "server CPU µs per keep-alive request ↓", "rsa", False),
    Row("c1_p50", "latency p50 ms at c=1 ↓", "rsa", False, "<= +0.1 ms", _delta_at_most(0.1)),
]


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def stats(values: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    if s["n"] == 1:
        return fmt(s["median"])
    return f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}]"


def collect(records: Sequence[Record], proxy: str, flavour: str, kind: str, metric: str) -> list[float]:
    return [float(r["metrics"][metric]) for r in records
            if r.get("valid") and r["proxy"] == proxy and r["flavour"] == flavour and r["kind"] == kind
            and r["metrics"].get(metric) is not None]


def summarize(records: Sequence[Record], ceiling: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The table as data: one dict per line, in print order."""
    lines: list[dict[str, Any]] = []
    flavours = {r["flavour"] for r in records}
    for row in ROWS:
        if row.flavour not in flavours:
            continue
        n = stats(collect(records, "nginx", row.flavour, row.kind, row.metric))
        c = stats(collect(records, "certgate", row.flavour, row.kind, row.metric))
        if n is None and c is None:
            continue
        nm, cm = (n or {}).get("median"), (c or {}).get("median")
        ratio = cm / nm if nm and cm is not None else None
        verdict = row.check(nm, cm) if row.check else None
        target = row.target
        if row.metric == "c1_p50" and nm is not None and cm is not None:
            target = f"{row.target} (here {cm - nm:+.2f} ms)"
        floors = {f: stats(collect(records, f, row.flavour, row.kind, row.metric)) for f in FLOORS}
        fm = (floors["floor-fwd"] or {}).get("median")
        lines.append({"metric": row.metric, "flavour": row.flavour, "label": row.label, "nginx": n,
                      "certgate": c, "ratio": ratio, "target": target, "met": verdict, "floors": floors,
                      "floor_ratio": cm / fm if fm and cm is not None else None})
    # certgate workers = 2 against workers = 1 (same placement for both).
    w1 = stats(collect(records, "certgate", "ec", "workers1", "ka_rps"))
    w2 = stats(collect(records, "certgate", "ec", "workers2", "ka_rps"))
    if w1 or w2:
        r = w2["median"] / w1["median"] if w1 and w2 and w1["median"] else None
        us_w = {k: stats(collect(records, "certgate", "ec", k, "ka_us")) for k in ("workers1", "workers2")}
        cores = {k: stats(collect(records, "certgate", "ec", k, "ka_cores")) for k in ("workers1", "workers2")}
        split = stats(collect(records, "certgate", "ec", "workers2", "ka_split_min"))
        lines.append({"metric": "workers_ka_rps", "flavour": "ec",
                      "label": "certgate keep-alive req/s, workers=2 vs workers=1 (2 cores shared) ↑",
                      "nginx": None, "certgate": {"workers1": w1, "workers2": w2},
                      "us_per_request": us_w, "cores": cores, "split_min": split, "ratio": r,
                      "ratio_of": "workers2/workers1", "target": ">= 1.9x (w2/w1)",
                      "met": None if r is None else r >= 1.9})
    if ceiling:
        for fl in sorted(flavours):
            sysc = ceiling.get("system", {}).get("ceiling", {}).get(fl)
            whc = ceiling.get("wheel", {}).get("ceiling", {}).get(fl)
            if not (sysc or whc):
                continue
            share = []
            for proxy, c in (("nginx", sysc), ("certgate", whc)):
                us = stats(collect(records, proxy, fl, "main", "hs_us"))
                if us and c:
                    share.append(f"{proxy} at {100 * c['us_per_hs'] / us['median']:.0f}%")
            lines.append({"metric": "ceiling", "flavour": fl,
                          "label": "crypto ceiling, full hs/s per core (µs of public-key work)",
                          "nginx": sysc, "certgate": whc, "ratio": None,
                          "target": "; ".join(share), "met": None, "ceiling": True})
    return lines


def _cells(line: dict[str, Any]) -> list[str]:
    if line.get("ceiling"):
        n, c = line["nginx"], line["certgate"]
        f = lambda x: "-" if not x else f"{x['hs_per_s']:,.0f} ({x['us_per_hs']:.0f} µs)"  # noqa: E731
        return [f(n) + " sys", f(c) + " wheel", "-", "-", "-", "-"]
    if line["metric"] == "workers_ka_rps":
        w, us = line["certgate"], line.get("us_per_request") or {}
        ratio = "-" if line["ratio"] is None else f"{line['ratio']:.2f}x"
        cores = line.get("cores") or {}
        each = [f"{k[0]}{k[-1]} {cell(w[k])}" + (f" ({fmt(us[k]['median'])} µs/req" if us.get(k) else " (")
                + (f", {cores[k]['median']:.2f} cores)" if cores.get(k) else ")")
                for k in ("workers1", "workers2")]
        if line.get("split_min"):
            each[-1] += f", smaller worker {100 * line['split_min']['median']:.0f}%"
        return ["-", " / ".join(each), ratio, "-", "-", "-"]
    ratio = "-" if line["ratio"] is None else f"{line['ratio']:.2f}x"
    floors = line.get("floors") or {}
    fratio = "-" if line.get("floor_ratio") is None else f"{line['floor_ratio']:.2f}x"
    return [cell(line["nginx"]), cell(line["certgate"]), ratio, cell(floors.get("floor-static")),
            cell(floors.get("floor-fwd")), fratio]


def render(lines: Sequence[dict[str, Any]], title: str) -> tuple[str, str]:
    """(plain-text table for the terminal, Markdown table)."""
    head = ["metric", "flavour", "nginx", "certgate", "certgate/nginx", "floor static", "floor fwd",
            "certgate/floor fwd", "target"]
    rows = []
    for line in lines:
        met = line["met"]
        target = line["target"] + ("" if met is None else (" ✔ met" if met else " ✘ missed"))
        rows.append([line["label"], line["flavour"], *_cells(line), target])
    md = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    text = [title, ""]
    text.append("  ".join(h.ljust(widths[i]) for i, h in enumerate(head)))
    text.append("  ".join("-" * w for w in widths))
    text += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(r)) for r in rows]
    return "\n".join(text) + "\n", "\n".join(md) + "\n"


def interference(records: Sequence[Record], threshold: float = 0.25) -> str:
    """One sentence on CPU used by other programs during the measured phases."""
    seen = []
    for r in records:
        if not r.get("valid"):
            continue
        for name, ph in r.get("phases", {}).items():
            f = ph.get("foreign_cores") if isinstance(ph, dict) else None
            if f is not None and name != "warmup":
                seen.append((f, f"{r['proxy']}/{r['flavour']}/{r['kind']}/rep{r['rep']}/{name}"))
    repeated = sum(1 for r in records if r.get("discarded"))
    if not seen:
        return "Other programs' CPU during the phases: not measured."
    vals = [f for f, _ in seen]
    busy = sorted((x for x in seen if x[0] > threshold), reverse=True)
    text = (f"Other programs' CPU during the {len(vals)} measured phases (cores, from /proc/stat): "
            f"median {statistics.median(vals):.2f}, max {max(vals):.2f}")
    if busy:
        text += (f"; {len(busy)} phase(s) above {threshold} cores, e.g. "
                 + ", ".join(f"{n} {f:.2f}" for f, n in busy[:4])
                 + ": compare their reps before trusting a small difference")
    if repeated:
        text += (f"; {repeated} run(s) were repeated because other programs used over 0.5 cores during them "
                 "(the cleaner run was kept)")
    return text + "."
