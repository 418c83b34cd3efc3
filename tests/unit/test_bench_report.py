"""The benchmark's pure parts: tool-output parsers, the ceiling formula, the table, the profile ranking.

The harness itself (processes, load) is exercised by `make bench-quick`; these tests pin the
arithmetic and parsing that the printed figures depend on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from certbench import ceiling, configs, phases, profile, report  # noqa: E402

WRK_OUT = """Running 3s test @ https://127.0.0.1:19443/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.47ms    1.10ms  40.01ms   95.12%
    Req/Sec    16.15k     1.01k   17.50k    70.00%
  Latency Distribution
     50%    1.41ms
     75%    1.60ms
     90%    1.90ms
     99%  812.00us
  48314 requests in 3.01s, 7.19MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 14
Requests/sec:  16051.16
Transfer/sec:      2.39MB
"""

SPEED_OUT = """version: 3.0.19
                              sign    verify    sign/s verify/s
rsa 2048 bits 0.000337s 0.000022s   2969.7  44743.0
                              sign    verify    sign/s verify/s
 256 bits ecdsa (nistp256)   0.0000s   0.0001s  37757.1  13078.8
                              op      op/s
 253 bits ecdh (X25519)   0.0000s  27239.0
"""


def test_parse_wrk_counts_only_2xx_and_converts_units() -> None:
    r = phases.parse_wrk(WRK_OUT)
    assert r["requests"] == 48314
    assert r["ok"] == 48314 - 14
    assert r["errors"] == 3 + 14
    assert r["p50_ms"] == pytest.approx(1.41)
    assert r["p99_ms"] == pytest.approx(0.812)
    assert r["rate"] == pytest.approx(16051.16 * (48314 - 14) / 48314)


def test_parse_wrk_without_output_is_zero_not_a_crash() -> None:
    r = phases.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
    assert r["ok"] == 0 and r["rate"] == 0.0 and r["p50_ms"] is None


def test_parse_json_line_takes_the_last_object_and_refuses_none() -> None:
    assert phases.parse_json_line('noise\n{"ok": 1}\n{"ok": 2}\n') == {"ok": 2}
    with pytest.raises(ValueError, match="no JSON result"):
        phases.parse_json_line("cgload: reading CA x: no such file\n")


def test_openssl_speed_parsing_and_ceiling_formula() -> None:
    ops = ceiling.parse_speed(SPEED_OUT)
    assert ops == {"rsa_sign": 2969.7, "rsa_verify": 44743.0, "ecdsa_sign": 37757.1,
                   "ecdsa_verify": 13078.8, "x25519_derive": 27239.0}
    c = ceiling.ceilings(ops)
    # t_full = 2 x25519 + sign + 2 verify
    t_ec = 2e6 / 27239.0 + 1e6 / 37757.1 + 2e6 / 13078.8
    assert c["ec"]["us_per_hs"] == pytest.approx(t_ec, abs=0.1)
    assert c["ec"]["hs_per_s"] == pytest.approx(1e6 / t_ec, abs=1)
    t_rsa = 2e6 / 27239.0 + 1e6 / 2969.7 + 2e6 / 44743.0
    assert c["rsa"]["us_per_hs"] == pytest.approx(t_rsa, abs=0.1)


def test_ceiling_skips_a_flavour_with_missing_primitives() -> None:
    assert set(ceiling.ceilings({"ecdsa_sign": 1.0, "ecdsa_verify": 1.0})) == set()


def _rec(proxy: str, rep: int, valid: bool = True, kind: str = "main", **metrics: float) -> dict:
    return {"proxy": proxy, "flavour": "ec", "rep": rep, "kind": kind, "valid": valid, "metrics": metrics}


def test_summary_medians_spread_ratio_and_targets() -> None:
    recs = [
        _rec("nginx", 1, hs_rate=1000, ka_rps=10000, c1_p50=0.15, conn_kib=20),
        _rec("nginx", 2, hs_rate=1100, ka_rps=12000, c1_p50=0.17, conn_kib=20),
        _rec("nginx", 3, hs_rate=900, ka_rps=11000, c1_p50=0.16, conn_kib=20),
        _rec("certgate", 1, hs_rate=1300, ka_rps=4000, c1_p50=0.45, conn_kib=40),
        _rec("certgate", 2, hs_rate=1200, ka_rps=5000, c1_p50=0.60, conn_kib=40),
        _rec("certgate", 3, hs_rate=1250, ka_rps=4500, c1_p50=0.50, conn_kib=40),
        _rec("certgate", 4, valid=False, hs_rate=1, ka_rps=1),  # invalid runs never count
        _rec("floor-fwd", 1, hs_rate=500, ka_rps=9000),
        _rec("floor-static", 1, hs_rate=800),
    ]
    rows = {r["metric"]: r for r in report.summarize(recs, None)}
    hs = rows["hs_rate"]
    assert hs["nginx"] == {"median": 1000, "min": 900, "max": 1100, "n": 3}
    assert hs["certgate"]["n"] == 3 and hs["ratio"] == pytest.approx(1.25) and hs["met"] is True
    assert rows["ka_rps"]["ratio"] == pytest.approx(4500 / 11000) and rows["ka_rps"]["met"] is False
    assert hs["floor_ratio"] == pytest.approx(2.5) and rows["ka_rps"]["floor_ratio"] == pytest.approx(0.5)
    assert hs["floors"]["floor-static"]["median"] == 800 and rows["c1_p50"]["floor_ratio"] is None
    c1 = rows["c1_p50"]
    assert c1["met"] is False and "+0.34 ms" in c1["target"]
    text, _ = report.render(list(rows.values()), "title")
    assert "certgate/floor fwd" in text and "2.50x" in text
    assert rows["conn_kib"]["ratio"] == pytest.approx(2.0) and rows["conn_kib"]["met"] is False
    assert "ws_rate" not in rows  # no data, no row


def test_scale_row_is_judged_on_certgate_alone() -> None:
    recs = [_rec("nginx", 1, scale_p99=3.0, rss_10k=90), _rec("certgate", 1, scale_p99=42.0, rss_10k=300)]
    rows = {r["metric"]: r for r in report.summarize(recs, None)}
    assert rows["scale_p99"]["met"] is True and rows["scale_p99"]["target"] == "< 100 ms"
    recs[1]["metrics"]["scale_p99"] = 140.0
    assert {r["metric"]: r for r in report.summarize(recs, None)}["scale_p99"]["met"] is False
    assert {r["metric"]: r for r in report.summarize(recs, None)}["rss_10k"]["ratio"] == pytest.approx(300 / 90)


def test_summary_workers_and_ceiling_rows() -> None:
    recs = [_rec("certgate", 1, kind="workers1", ka_rps=5000, ka_us=100),
            _rec("certgate", 1, kind="workers2", ka_rps=9500, ka_us=105),
            _rec("nginx", 1, hs_us=1000), _rec("certgate", 1, hs_us=800)]
    ceil = {"system": {"ceiling": {"ec": {"us_per_hs": 250.0, "hs_per_s": 4000.0}}},
            "wheel": {"ceiling": {"ec": {"us_per_hs": 400.0, "hs_per_s": 2500.0}}}}
    rows = {r["metric"]: r for r in report.summarize(recs, ceil)}
    w = rows["workers_ka_rps"]
    assert w["ratio"] == pytest.approx(1.9) and w["met"] is True  # the target is >= 1.9x
    assert rows["ceiling"]["target"] == "nginx at 25%; certgate at 50%"
    text, md = report.render(list(rows.values()), "title")
    assert "w1 5,000 (100 µs/req) / w2 9,500 (105 µs/req)" in text and "1.90x" in text and "✔ met" in text
    assert md.startswith("### title") and md.count("\n|") >= 4


def test_workers_row_shows_cores_used_and_the_split_between_workers() -> None:
    """Two measurements per count (alternated): medians of rate, µs, cores, and the smaller
    worker's share of certgate's CPU (how evenly SO_REUSEPORT spread the connections)."""
    recs = [_rec("certgate", 1, kind="workers1", ka_rps=5000, ka_us=130, ka_cores=0.7, ka_split_min=1.0),
            _rec("certgate", 1, kind="workers2", ka_rps=8000, ka_us=110, ka_cores=0.9, ka_split_min=0.46),
            _rec("certgate", 1, kind="workers2", ka_rps=11000, ka_us=104, ka_cores=1.1, ka_split_min=0.48),
            _rec("certgate", 1, kind="workers1", ka_rps=5200, ka_us=140, ka_cores=0.7, ka_split_min=1.0)]
    w = {r["metric"]: r for r in report.summarize(recs, None)}["workers_ka_rps"]
    assert w["ratio"] == pytest.approx(9500 / 5100)
    text, _ = report.render([w], "title")
    assert "w1 5,100 [5,000-5,200] (135 µs/req, 0.70 cores)" in text
    assert "w2 9,500 [8,000-11,000] (107 µs/req, 1.00 cores), smaller worker 47%" in text


def test_interference_names_the_busy_phases() -> None:
    recs = [_rec("nginx", 1), _rec("certgate", 1)]
    recs[0]["phases"] = {"warmup": {"foreign_cores": 1.9}, "ka": {"foreign_cores": 0.1}}
    recs[1]["phases"] = {"ka": {"foreign_cores": 0.8}}
    text = report.interference(recs)
    assert "2 measured phases" in text and "max 0.80" in text and "certgate/ec/main/rep1/ka 0.80" in text
    assert "warmup" not in text


def test_profile_ranks_self_time_by_area_and_function() -> None:
    collapsed = (
        "process 1:\"certgate\";run (twisted/internet/base.py:686);doRead (twisted/internet/tcp.py:285) 50\n"
        "process 1:\"certgate\";run (twisted/internet/base.py:686);feed (proxy/http/connection.py:288);"
        "recv (OpenSSL/SSL.py:2356) 30\n"
        "process 1:\"certgate\";run (twisted/internet/base.py:686);feed (proxy/http/connection.py:288) 20\n"
    )
    prof = profile.top_frames(collapsed)
    assert prof["samples"] == 100
    assert prof["areas"][0] == ("Twisted reactor, TCP, syscalls", 50.0)
    assert ("pyOpenSSL/OpenSSL calls", 30.0) in prof["areas"]
    assert ("certgate proxy/http/connection.py", 20.0) in prof["areas"]
    assert prof["inclusive_certgate"] == [("feed (proxy/http/connection.py:288)", 50.0)]


def test_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    p = configs.choose_ports()
    assert len(set(p.all())) == 6 and max(p.all()) < 32768
    assert p.proxy("certgate") - p.proxy("nginx") == 8


def _loaded(foreign: float, valid: bool = True) -> dict:
    rec = _rec("certgate", 1, valid=valid, ka_rps=1000)
    rec["phases"] = {"warmup": {"foreign_cores": 1.5}, "ka": {"foreign_cores": foreign}}
    return rec


def test_a_run_disturbed_by_other_programs_is_repeated_once_and_the_cleaner_kept() -> None:
    from certbench.runs import FULL, Runner

    runner = Runner(None, FULL, {})  # type: ignore[arg-type]
    results = iter([_loaded(0.9), _loaded(0.1)])
    kept = runner.clean(lambda: next(results))
    assert [r["valid"] for r in kept] == [False, True]
    assert "0.90 cores" in kept[0]["discarded"] and kept[1]["phases"]["ka"]["foreign_cores"] == 0.1
    assert runner.retries_left == FULL.retry_budget - 1
    # A quiet run (the warm-up does not count) is not repeated; nor is anything once the budget is spent.
    assert len(runner.clean(lambda: _loaded(0.2))) == 1
    runner.retries_left = 0
    assert len(runner.clean(lambda: _loaded(0.9))) == 1
    assert "repeated" in report.interference(kept)
