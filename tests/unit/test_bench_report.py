"""BENCHMARKS.md and its plots built from small results of the shapes the benchmarks write,
one benchmark's results missing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bench.plots import build
from bench.report import client_timeline, ratio_table

PNG = b"\x89PNG\r\n\x1a\n"
STARTED = 1_796_194_527.0
STEPS = [
    ("phase 1: copy v from node1 to node2", 0.0, 3.0),
    ("hold new connections to store (port 9200) on node1, node2 for up to 30s", 3.0, 0.05),
    ("stop store on node1", 3.05, 0.1),
    ("phase 2: copy what changed in v from node1 to node2", 3.15, 0.06),
    ("start store on node2", 3.21, 0.03),
    ("route port 9200 on node1, node2 to store on node2", 3.24, 0.05),
]


def last_move(phase2_bytes: int) -> dict[str, Any]:
    return {
        "started_at": STARTED,
        "steps": [{"step": step, "started_at": STARTED + at, "seconds": seconds} for step, at, seconds in STEPS],
        "rounds": [
            {"bytes_sent": 100_000_000, "seconds": 1.0, "final": False},
            {"bytes_sent": phase2_bytes, "seconds": 0.05, "final": True},
        ],
    }


def timeline() -> dict[str, Any]:
    # Writes every 10 ms, none from the stop to the end of the start: a pause of 0.2 s.
    acknowledged = [round(2.0 + i / 100, 3) for i in range(250) if not 3.05 < 2.0 + i / 100 < 3.25]
    return {"acknowledged_s": acknowledged, "steps": [{"step": s, "start_s": at, "seconds": sec} for s, at, sec in STEPS]}


def standin_case(size: int, downtime: float, naive: float | None) -> dict[str, Any]:
    moves = [
        {"client_downtime_seconds": downtime, "last_move": last_move(30_000), "client_timeline": timeline()},
        {"client_downtime_seconds": downtime, "last_move": last_move(5_000)},
    ]
    case: dict[str, Any] = {
        "bytes": size,
        "downtime_seconds": downtime,
        "raw_copies": [{"bytes": 100_000_000, "seconds": 1.0}],
        "moves": moves,
    }
    return case | ({"naive": {"downtime_seconds": naive}} if naive else {})


def postgres_case(size: int, downtime: float, restart: float) -> dict[str, Any]:
    move = {"client_downtime_seconds": downtime, "phase2_seconds": 0.5, "phase2_round": {"bytes_sent": 100_000_000}}
    return {
        "database_bytes": size,
        "cat_seconds": 0.25,
        "moves": [move, move],
        "downtime_seconds": downtime,
        "restart": {"client_downtime_seconds": restart},
    }


def write(results: Path, name: str, document: dict[str, Any]) -> None:
    (results / f"{name}.json").write_text(json.dumps(document))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    measured = {"measured_at": "2026-12-02T06:57:05Z", "cpus": 2}
    write(
        results,
        "move",
        measured
        | {
            "cases": {"100M": standin_case(100 << 20, 0.5, None), "1G": standin_case(1 << 30, 0.6, 12.0)},
            "ratios": {"downtime_over_naive": 0.05},
            "targets": {"downtime_over_naive": "<= 0.1"},
        },
    )
    write(
        results,
        "postgres",
        measured
        | {
            "cases": {"250M": postgres_case(250_000_000, 1.0, 2.0)},
            "ratios": {"downtime_over_restart": 0.5, "phase2_over_cat": 2.5},
            "targets": {"downtime_over_restart": "<= 1.5", "phase2_over_cat": "<= 2.0"},
        },
    )
    paths = {"direct": {"median_throughput_mib_s": 2000.0}}
    rounds = {"routed_mib_s": [900.0, 1800.0, 800.0], "baseline_mib_s": [1000.0, 2000.0, 1000.0]}
    move = {"routed_via_node3": {"failed": 0}, "router_node3": {"max_hold_seconds": 0.4}}
    ratios = {
        "kernel_route_over_bare_dnat_paired_median": 0.9,
        "routed_over_direct_at_1gbit_paired_median": 0.99,
        "routed_over_direct_paired_median": 0.8,
        "extra": 1.0,
    }
    targets = {"kernel_route_over_bare_dnat_paired_median": ">= 0.95", "failed_connections_during_move": "<= 0"}
    document = {"paths": paths, "bare_dnat": rounds, "limited": {**rounds, "line_rate_mib_s": 119.2}, "move": move}
    write(results, "routing", document | {"ratios": ratios, "targets": targets})
    return results


def test_report_gives_the_ratios_plots_and_what_is_missing(results: Path, tmp_path: Path) -> None:
    out, plots = tmp_path / "BENCHMARKS.md", results / "plots"
    plots.mkdir()
    (plots / "stale.png").write_bytes(PNG)

    build(results, out, plots)

    report = out.read_text()
    assert "| downtime_over_naive | 0.050 | met (target <= 0.1) |" in report
    assert "| phase2_over_cat | 2.500 | MISSED (target <= 2.0) |" in report
    assert "| extra | 1.000 | context |" in report  # a ratio without a target
    assert "No results: opensearch.json is not there" in report
    assert "stand-in: move over naive stop-copy-start ×0.05 at 1.07 GB" in report
    assert "PostgreSQL: move over docker restart ×0.50 at 0.25 GB" in report
    assert "phase 2 over one cat of the whole volume: 2.00" in report
    assert (
        "kernel_route_over_bare_dnat_paired_median: 0.900 (target >= 0.95); medians 900 MiB/s routed, 1000 MiB/s bare DNAT rule" in report
    )
    assert "| kernel_route_over_bare_dnat_paired_median | 0.900 | MISSED (target >= 0.95) |" in report
    # Only the stand-in recorded a client's timeline; PostgreSQL's absence is said.
    assert "No client timeline (a move's `client_timeline`) in the results of PostgreSQL yet" in report
    assert "Measured 2026-12-02T06:57:05Z, on 2 cores." in report
    assert "Measured at a time not recorded" in report  # routing.json has no date
    drawn = {p.name for p in plots.glob("*.png")}
    assert drawn == {"downtime.png", "phase2.png", "timeline.png", "routing.png"}
    assert all((plots / name).read_bytes().startswith(PNG) for name in drawn)
    for name in drawn:
        assert f"](results/plots/{name})" in report


def test_results_of_an_unknown_shape_are_named_not_fatal(results: Path, tmp_path: Path) -> None:
    write(results, "postgres", {"cases": {"250M": {"size": "250M"}}})
    for name in ("move", "routing"):
        (results / f"{name}.json").unlink()
    out = tmp_path / "BENCHMARKS.md"

    build(results, out, tmp_path / "plots")

    report = out.read_text()
    assert "Not read: postgres.json has a shape bench/plots.py does not know (KeyError" in report
    assert "No move results to plot." in report
    assert "No routing results to plot." in report
    assert not list((tmp_path / "plots").glob("*.png"))


def test_client_timeline_keeps_the_switch_over_on_the_steps_clock() -> None:
    move = last_move(30_000)
    offset = time.time() - time.monotonic()
    # One acknowledgement every 0.1 s of the move's first 6 s, on the monotonic clock.
    served = [STARTED + i / 10 - offset for i in range(60)]

    kept = client_timeline(served, move)["acknowledged_s"]

    # From 1 s before the hold (at 3.0 s) to 1 s after the last step ends (at 3.29 s).
    assert kept[0] == pytest.approx(2.0, abs=0.01)
    assert kept[-1] == pytest.approx(4.2, abs=0.01)
    assert client_timeline(served, move)["steps"][1]["start_s"] == 3.0


def test_a_ratio_without_a_target_is_context() -> None:
    table = ratio_table("ratio", {"a": 0.5, "b": 2.0}, {"a": ("<=", 1.0)})
    assert table[-2:] == ["| a | 0.500 | met (target <= 1.0) |", "| b | 2.000 | context |"]
