"""A move's report: immutable records, each fact measured making a new report, kept in the
volume's outputs in the same form as ever."""

import dataclasses

import pytest

from flocker_provider.execution.move_context import DeltaRound, MoveReport, StepTime, StreamRound

RESULT = {"seconds": 0.5, "bytes_sent": 10, "bytes_read": 20, "files_read": 3, "pages_sent": 1, "total_size": 100, "dirty_bytes": 0}


# What RESULT does not say of a round, as its output has it.
UNSAID = dict.fromkeys(("bytes_written", "readers", "parts", "files_mapped", "map_seconds", "extents"))


def test_the_report_s_output_holds_every_round_step_and_time() -> None:
    started = MoveReport("node1", "node2", started_at=1.0)
    report = (
        started.with_rounds((StreamRound(100, 2.0), DeltaRound.of(RESULT, final=False, predicted=0.25)))
        .with_step(StepTime("phase 1: copy v from node1 to node2", 1.5, 2.6))
        .with_rounds((DeltaRound.of(RESULT, final=True),))
        .with_downtime(0.8)
    )
    assert dataclasses.replace(report, finished_at=9.0).as_output() == {
        "from": "node1",
        "to": "node2",
        "rounds": [
            {"final": False, "method": "stream", "bytes_sent": 100, "bytes_read": 100, "total_size": 100, "seconds": 2.0},
            {
                "final": False,
                "method": "delta",
                **RESULT,
                **UNSAID,
                "predicted_phase2_seconds": 0.25,
            },
            {
                "final": True,
                "method": "delta",
                **RESULT,
                **UNSAID,
            },
        ],
        "phase2_bytes_sent": 10,
        "downtime_seconds": 0.8,
        "steps": [{"step": "phase 1: copy v from node1 to node2", "started_at": 1.5, "seconds": 2.6}],
        "started_at": 1.0,
        "finished_at": 9.0,
    }
    assert started == MoveReport("node1", "node2", started_at=1.0)  # what it was built from is as it was


def test_the_report_and_its_records_cannot_be_changed() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MoveReport("node1", "node2").downtime_seconds = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DeltaRound.of(RESULT, final=True).bytes_sent = 0  # type: ignore[misc]
