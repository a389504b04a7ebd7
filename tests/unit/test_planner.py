"""The planner is pure: every test states a whole expected plan and compares with ==."""

import pytest

from flocker_provider.containers import ContainerSpec, MountedContainer
from flocker_provider.models import Node, NodeVolumeState, Port, RunningContainer
from flocker_provider.planner import MoveState, PlanError, plan_application, plan_move, plan_volume
from flocker_provider.steps import (
    CreateVolume,
    HandoffVolume,
    PushVolume,
    RemoveApplication,
    RemoveVolume,
    StartApplication,
    StopApplication,
    VerifyVolume,
    WaitForApplication,
)

N1 = Node("node1", "10.0.0.1", "tcp://10.0.0.1:2375")
N2 = Node("node2", "10.0.0.2", "tcp://10.0.0.2:2375")
SPEC = ContainerSpec(name="flocker-dev-es", image="es:1", ports=(Port(9200, 9200),), volume_name="v", mountpoint="/d")
LABELS = (("io.flocker-pulumi.managed", "true"),)


def running(spec: ContainerSpec = SPEC, up: bool = True) -> RunningContainer:
    return RunningContainer(spec.name, "id-" + spec.name, up, spec.config_hash())


def test_new_application_is_started_and_awaited() -> None:
    assert plan_application((N1, SPEC), {N1: None}) == (
        StartApplication(N1, SPEC),
        WaitForApplication(N1, SPEC.name),
    )


def test_unchanged_application_plans_nothing() -> None:
    assert plan_application((N1, SPEC), {N1: running()}) == ()


def test_changed_configuration_replaces_the_container_in_place() -> None:
    new = ContainerSpec(**{**SPEC.__dict__, "image": "es:2"})
    assert plan_application((N1, new), {N1: running()}) == (
        RemoveApplication(N1, SPEC.name),
        StartApplication(N1, new),
        WaitForApplication(N1, SPEC.name),
    )


def test_stopped_container_is_recreated() -> None:
    assert plan_application((N1, SPEC), {N1: running(up=False)}) == (
        RemoveApplication(N1, SPEC.name),
        StartApplication(N1, SPEC),
        WaitForApplication(N1, SPEC.name),
    )


def test_stateless_move_starts_new_before_stopping_old() -> None:
    assert plan_application((N2, SPEC), {N1: running(), N2: None}) == (
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        RemoveApplication(N1, SPEC.name),
    )


def test_move_already_done_by_the_volume_only_cleans_up() -> None:
    assert plan_application((N2, SPEC), {N1: None, N2: running()}) == ()


def test_delete_removes_everywhere_found() -> None:
    assert plan_application(None, {N1: running(), N2: None}) == (RemoveApplication(N1, SPEC.name),)


def test_volume_created_once() -> None:
    assert plan_volume((N1, "v", LABELS), {N1: NodeVolumeState("v", exists=False)}) == (CreateVolume(N1, "v", LABELS),)
    assert plan_volume((N1, "v", LABELS), {N1: NodeVolumeState("v", exists=True)}) == ()


def test_volume_delete_removes_live_and_retired_copies() -> None:
    discovered = {N1: NodeVolumeState("v", exists=True), N2: NodeVolumeState("v", exists=True, retired=True)}
    assert plan_volume(None, discovered) == (RemoveVolume(N1, "v"), RemoveVolume(N2, "v"))


def move_state(**changes: object) -> MoveState:
    base = {
        "source_volume": NodeVolumeState("v", exists=True),
        "destination_volume": NodeVolumeState("v", exists=False),
        "source_containers": (MountedContainer(SPEC.name, SPEC, running=True),),
        "destination_containers": (),
    }
    return MoveState(**{**base, **changes})


def test_two_phase_push() -> None:
    assert plan_move("v", LABELS, N1, N2, move_state()) == (
        PushVolume(N1, N2, "v", final=False),
        StopApplication(N1, SPEC.name),
        PushVolume(N1, N2, "v", final=True),
        VerifyVolume(N1, N2, "v"),
        HandoffVolume(N1, N2, "v", LABELS),
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        RemoveApplication(N1, SPEC.name),
    )


def test_standalone_volume_moves_without_applications() -> None:
    assert plan_move("v", LABELS, N1, N2, move_state(source_containers=())) == (
        PushVolume(N1, N2, "v", final=False),
        PushVolume(N1, N2, "v", final=True),
        VerifyVolume(N1, N2, "v"),
        HandoffVolume(N1, N2, "v", LABELS),
    )


def test_rerun_after_handoff_only_finishes_the_move() -> None:
    state = move_state(
        source_volume=NodeVolumeState("v", exists=True, retired=True),
        destination_volume=NodeVolumeState("v", exists=True),
        source_containers=(MountedContainer(SPEC.name, SPEC, running=False),),
    )
    assert plan_move("v", LABELS, N1, N2, state) == (
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        RemoveApplication(N1, SPEC.name),
    )


def test_rerun_replaces_a_half_started_destination_container() -> None:
    state = move_state(
        source_volume=NodeVolumeState("v", exists=True, retired=True),
        destination_volume=NodeVolumeState("v", exists=True),
        source_containers=(MountedContainer(SPEC.name, SPEC, running=False),),
        destination_containers=(MountedContainer(SPEC.name, SPEC, running=False),),
    )
    assert plan_move("v", LABELS, N1, N2, state) == (
        RemoveApplication(N2, SPEC.name),
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        RemoveApplication(N1, SPEC.name),
    )


def test_move_back_to_a_retired_copy_is_a_normal_push() -> None:
    state = move_state(destination_volume=NodeVolumeState("v", exists=True, retired=True))
    assert plan_move("v", LABELS, N1, N2, state)[0] == PushVolume(N1, N2, "v", final=False)


def test_nothing_to_move_is_an_error() -> None:
    with pytest.raises(PlanError, match="no live copy on node1"):
        plan_move("v", LABELS, N1, N2, move_state(source_volume=NodeVolumeState("v", exists=False)))
