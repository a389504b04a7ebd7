"""What the benchmarks record for the report: a client's timeline through a move."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bench.report import client_timeline, ratio_table

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
