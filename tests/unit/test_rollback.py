"""What a failed move says it did on the way back (``nothing was lost: ...``), from the
rollback plan's steps and how each went: the words `pulumi up` shows and the tests of
moves on the cluster look for."""

import pytest
from docker_fakes import fake_nodes
from test_errors import NODES, data, shown

from flocker_provider import errors
from flocker_provider.dynamic_providers import VolumeProvider
from flocker_provider.errors import NodeUnreachable
from flocker_provider.execution import migration
from flocker_provider.execution.migration import rollback_story
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import ContainerSpec, MountedContainer, router_spec
from flocker_provider.planning.models import Node, NodeVolumeState, Port
from flocker_provider.planning.planner import AfterFailure
from flocker_provider.planning.steps import InParallel, PointRoutes, RemoveStaged, RemoveVolume, RestartApplication, Routes

N1 = Node("node1", "10.0.0.1", "tcp://10.0.0.1:2375")
N2 = Node("node2", "10.0.0.2", "tcp://10.0.0.2:2375")
SPEC = ContainerSpec(name="flocker-s-web", image="web:1", ports=(Port(80, 8080),), volume_name="v")
SERVING = AfterFailure((MountedContainer(SPEC.name, SPEC, running=True),), NodeVolumeState("v", exists=True, partial=True), ())
ROUTER = router_spec("p", "s", "flocker/base:local")
BACK = InParallel(tuple(PointRoutes(n, ROUTER, Routes("web", SPEC.ports, N1, SPEC.name, 5.0)) for n in (N1, N2)))
DOWN = NodeUnreachable("Docker engine at tcp://10.0.0.2:2375 did not answer: Connection refused", node="node2")


def test_a_move_that_failed_in_phase_1() -> None:
    assert rollback_story(SERVING, [(RemoveVolume(N2, "v"), None)]) == (
        "the application kept running on the source; the partial copy on node2 was removed"
    )


def test_a_move_that_failed_once_stopped() -> None:
    outcomes = [(RestartApplication(N1, SPEC.name), None), (BACK, None), (RemoveStaged(N2, SPEC.name), None), (RemoveVolume(N2, "v"), None)]
    assert rollback_story(SERVING, outcomes) == "restarted flocker-s-web on node1; the partial copy on node2 was removed"


def test_a_source_whose_engine_went_down() -> None:
    after = AfterFailure(None, NodeVolumeState("v", exists=True, partial=True), ())
    assert rollback_story(after, [(RemoveVolume(N2, "v"), None)]) == (
        "the application went down with the source's engine and was not moved; the partial copy on node2 was removed"
    )


def test_what_could_not_be_undone_is_said() -> None:
    outcomes = [(RestartApplication(N1, SPEC.name), DOWN), (BACK, DOWN), (RemoveStaged(N2, SPEC.name), DOWN), (RemoveVolume(N2, "v"), DOWN)]
    said = DOWN.summary()
    assert rollback_story(AfterFailure(None, None, None), outcomes) == (
        f"restarting on the source failed for flocker-s-web on node1: {said}; routes on {said} could not be pointed back; "
        f"could not remove flocker-s-web.staged on node2: {said}; the partial copy on node2 is left and will be reused by the next move"
    )


def test_a_move_that_fails_at_the_verification_goes_back_as_planned(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On stand-in nodes under the real Docker layer (which model no mounts, so the volume
    moves alone): the partial copy is found by its marker and removed by the executor."""
    hosts = fake_nodes(monkeypatch, NODES)
    monkeypatch.setattr(migration.TransferChannel, "push", lambda channel, final, timeout: [])
    monkeypatch.setattr(migration.TransferChannel, "arm", lambda channel: None)

    def differs(channel: migration.TransferChannel, timeout: float) -> None:
        assert hosts[N2].containers["flocker-s-data.partial"].labels[L.PARTIAL] == "true"
        raise errors.MoveFailed("the copy differs from the source: ./a: size", node="node2")

    monkeypatch.setattr(migration.TransferChannel, "verify", differs)
    VolumeProvider().create(data(N1))
    capsys.readouterr()
    assert shown(lambda: VolumeProvider().update("flocker-s-data", data(N1), data(N2))) == (
        "volume data: step 'verify flocker-s-data on node2 against node1' failed: node node2: the copy differs from the source: "
        "./a: size; nothing was lost: the application kept running on the source; the partial copy on node2 was removed. "
        f"What to do: {errors.MoveFailed.remedy}"
    )
    assert [line for line in capsys.readouterr().out.splitlines() if ": undo: " in line] == [
        "flocker: move data: undo: remove volume flocker-s-data from node2"
    ]
    assert hosts[N2].volumes == {} and hosts[N2].containers == {}


def test_the_handoff_makes_the_copy_live(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = fake_nodes(monkeypatch, NODES)
    for step in ("push", "arm", "verify"):
        monkeypatch.setattr(migration.TransferChannel, step, lambda channel, *_: [])
    VolumeProvider().create(data(N1))
    VolumeProvider().update("flocker-s-data", data(N1), data(N2))
    assert [name for name in hosts[N2].containers if name.startswith("flocker-s-data")] == []
    assert L.RETIRED in hosts[N1].containers["flocker-s-data-retired"].labels


def test_the_handoff_renames_the_retirement_marker_made_before_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = fake_nodes(monkeypatch, NODES)
    for step in ("push", "verify"):
        monkeypatch.setattr(migration.TransferChannel, step, lambda channel, *_: [])
    made: list[set[str]] = []

    def arm(channel: migration.TransferChannel) -> None:  # the copy's programs aside
        channel.prepare_handoff()
        made.append(set(hosts[N1].containers))

    monkeypatch.setattr(migration.TransferChannel, "arm", arm)
    VolumeProvider().create(data(N1))
    VolumeProvider().update("flocker-s-data", data(N1), data(N2))
    assert "flocker-s-data.retiring" in made[0] and "flocker-s-data-retired" not in made[0]
    assert "flocker-s-data.retiring" not in hosts[N1].containers
    assert L.RETIRED in hosts[N1].containers["flocker-s-data-retired"].labels


def test_a_retirement_marker_made_for_a_move_that_failed_goes_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = fake_nodes(monkeypatch, NODES)
    monkeypatch.setattr(migration.TransferChannel, "push", lambda channel, final, timeout: [])
    monkeypatch.setattr(migration.TransferChannel, "arm", migration.TransferChannel.prepare_handoff)

    def differs(channel: migration.TransferChannel, timeout: float) -> None:
        assert "flocker-s-data.retiring" in hosts[N1].containers
        raise errors.MoveFailed("the copy differs from the source: ./a: size", node="node2")

    monkeypatch.setattr(migration.TransferChannel, "verify", differs)
    VolumeProvider().create(data(N1))
    with pytest.raises(errors.ProviderError):
        VolumeProvider().update("flocker-s-data", data(N1), data(N2))
    assert [name for name in hosts[N1].containers if name.startswith("flocker-s-data")] == []
