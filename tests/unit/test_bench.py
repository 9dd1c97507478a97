"""The arithmetic and the table of ``make bench`` (bench/cells.py, bench/report.py): the frontier's
bounds, the memory slope, and a peer that cannot serve a cell shown with its evidence."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import cells  # noqa: E402
import report  # noqa: E402


def step(conns: int, rps: float, p99: float, failures: int = 0) -> dict[str, Any]:
    return {"conns": conns, "rps": rps, "p99_ms": p99, "failures": failures, "requests": int(rps)}


def test_frontier_bounds_take_the_most_req_s_under_each_p99_bound_and_skip_failing_steps() -> None:
    steps = [step(1, 1000, 0.8), step(2, 1800, 1.5), step(4, 2500, 4.0), step(8, 2600, 9.0),
             step(16, 2700, 30.0), step(32, 9999, 20.0, failures=3)]
    bounds = cells.bounds_of(steps)
    assert bounds["p99<1ms"] == {"rps": 1000, "conns": 1, "p99_ms": 0.8}
    assert bounds["p99<5ms"]["rps"] == 2500
    assert bounds["p99<10ms"]["rps"] == 2600
    assert bounds["p99<50ms"]["rps"] == 2700
    assert bounds["unbounded"]["rps"] == 2700  # the failing step never counts, however fast
    assert cells.best_step(steps)["conns"] == 16


def test_a_bound_no_step_meets_is_empty_not_zero() -> None:
    bounds = cells.bounds_of([step(1, 40, 30.0), step(2, 45, 60.0)])
    assert bounds["p99<1ms"] is None and bounds["p99<10ms"] is None
    assert bounds["p99<50ms"]["rps"] == 40 and bounds["unbounded"]["rps"] == 45


def test_memory_growth_is_the_least_squares_slope() -> None:
    points = [(t, 100 + 0.01 * t + (0.5 if t % 20 else -0.5)) for t in range(60, 300, 5)]
    assert abs(cells.slope(points) * 60 - 0.6) < 0.05
    assert cells.slope([(60.0, 80.0), (65.0, 80.0), (70.0, 80.0)]) == 0.0


def result(portkey: dict[str, Any]) -> dict[str, Any]:
    frontier = {"served": True, "steps": [step(1, 1500, 0.9)], "bounds": cells.bounds_of([step(1, 1500, 0.9)]),
                "at_best": {**step(1, 1500, 0.9), "cpu_us_per_req": 600.0}}
    vte = {"label": "vte-proxy", "version": "vte-proxy 0", "frontier": frontier,
           "latency": {"served": True, "added_p50_ms": 0.5, "added_p99_ms": 0.9, "failures": 0},
           "messages": cells.not_served("HTTP 404 POST /v1/messages: Not Found")}
    return {"meta": {"started": "t0", "finished": "t1", "settings": {}}, "rig": {},
            "gateways": {"vte": vte, "portkey": portkey}}


def test_a_peer_that_cannot_serve_a_cell_is_shown_with_its_evidence() -> None:
    portkey = {"label": "Portkey", "version": "portkey 1", "frontier": {"served": True, "steps": [],
                                                                       "bounds": cells.bounds_of([step(1, 50, 40.0)])},
               "latency": {"served": True, "added_p50_ms": 20.0, "added_p99_ms": 60.0, "failures": 0},
               "streams": cells.not_served("HTTP 500: Something went wrong; its log: TypeError: immutable")}
    text = report.table(result(portkey))
    assert "Portkey, streams: not served: HTTP 500: Something went wrong; its log: TypeError: immutable" in text
    assert "vte-proxy, messages: not served: HTTP 404" in text
    streams_row = next(line for line in text.splitlines() if line.startswith("streams sustained"))
    assert streams_row.split()[-1] == "served"  # "not served" in Portkey's column, not a blank or a zero
    assert "met  added p99 at c=1 under a third of Portkey's" in text
    assert "MISS x3 portkey on every throughput reading: p99<1ms x inf" not in text


def test_a_peer_that_did_not_start_keeps_its_column() -> None:
    text = report.table(result({"label": "Portkey", "started": False, "evidence": "npm install failed"}))
    assert "Portkey did not start: npm install failed" in text
    assert "did not start" in next(line for line in text.splitlines() if line.startswith("req/s, unbounded"))


def test_the_streams_target_shows_what_bounds_it_on_this_machine() -> None:
    res = result({"label": "Portkey", "started": False, "evidence": "npm install failed"})
    streams = {"served": True, "added_ttft_p50_ms": 3.0, "added_gap_p50_ms": 0.1, "added_gap_p99_ms": 1.5,
               "sustained": {"sustained": 700, "steps": []}}
    res["gateways"]["vte"]["streams"] = streams
    res["gateways"]["asgi"] = {"label": "uvicorn+aiohttp", "version": "0 / 0", "streams": streams}
    res["rig"]["streams"] = {"sustained": 1000}
    text = report.table(res)
    line = next(x for x in text.splitlines() if "streams sustained >= 1,000" in x)
    assert line.startswith("  MISS") and line.endswith("(same run: rig 1,000, Python floor 700)")
    columns = next(x for x in text.splitlines() if "vte-proxy" in x and "uvicorn+aiohttp" in x).split()
    assert columns == ["uvicorn+aiohttp", "vte-proxy", "Portkey"]  # the Python floor's column before vte-proxy's
