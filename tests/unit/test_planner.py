"""The planner is pure: every test states a whole expected plan and compares with ==."""

import dataclasses

import pytest

from flocker_provider.planning.containers import ContainerSpec, MountedContainer, router_spec
from flocker_provider.planning.models import Node, NodeVolumeState, Port, RunningContainer, TLSConfig
from flocker_provider.planning.planner import (
    AfterFailure,
    MoveState,
    PlanError,
    Routing,
    plan_application,
    plan_move,
    plan_rollback,
    plan_strays,
    plan_volume,
)
from flocker_provider.planning.steps import (
    ArmFinalCopy,
    ConfirmApplication,
    CreateVolume,
    FinishStop,
    FlushApplication,
    HandoffVolume,
    InParallel,
    PointRoutes,
    PrepareRoutes,
    PushVolume,
    RemoveApplication,
    RemoveRoutes,
    RemoveStaged,
    RemoveVolume,
    RestartApplication,
    Routes,
    StageApplication,
    StartApplication,
    StopApplication,
    StopStray,
    VerifyVolume,
    WaitForApplication,
    WatchExit,
    describe,
)

N1 = Node("node1", "10.0.0.1", "tcp://10.0.0.1:2375")
N2 = Node("node2", "10.0.0.2", "tcp://10.0.0.2:2375")
N3 = Node("node3", "10.0.0.3", "tcp://10.0.0.3:2375")
N4 = Node("node4", "10.0.0.4", "tcp://10.0.0.4:2375")
SPEC = ContainerSpec(
    name="flocker-dev-es",
    image="es:1",
    ports=(Port(9200, 9200),),
    volume_name="v",
    mountpoint="/d",
    labels=(("io.flocker-pulumi.resource", "es"),),
)
LABELS = (("io.flocker-pulumi.managed", "true"),)
ROUTER = router_spec("p", "dev", "flocker/base:local")
ROUTING = Routing(ROUTER, (N1, N2, N3), 30.0)


def route(backend: Node | None, spec: ContainerSpec = SPEC) -> tuple[InParallel]:
    """The application's routes on every node at once, to ``backend`` or held."""
    routes = Routes("es", spec.ports, backend, spec.name, 30.0)
    return (InParallel(tuple(PointRoutes(n, ROUTER, routes) for n in (N1, N2, N3))),)


def unroute(*ports: int, nodes: tuple[Node, ...] = (N1, N2, N3)) -> InParallel | RemoveRoutes:
    removals = tuple(RemoveRoutes(n, ROUTER, "es", ports) for n in nodes)
    return InParallel(removals) if len(removals) > 1 else removals[0]


PREPARE = InParallel(tuple(PrepareRoutes(n, ROUTER) for n in (N1, N2, N3)))
FINISH = FinishStop(N1, SPEC.name)
ARM = ArmFinalCopy(N1, N2, "v")
WATCH = WatchExit(N1, SPEC.name)


def plan(desired: tuple[Node, ContainerSpec] | None, discovered: dict, old_ports: tuple[Port, ...] = ()) -> tuple:
    return plan_application("es", desired, discovered, ROUTING, old_ports)


def running(spec: ContainerSpec = SPEC, up: bool = True) -> RunningContainer:
    return RunningContainer(spec.name, "id-" + spec.name, up, spec.config_hash())


def test_new_application_is_started_awaited_routed_on_every_node_then_confirmed() -> None:
    assert plan((N1, SPEC), {N1: None}) == (
        StartApplication(N1, SPEC),
        WaitForApplication(N1, SPEC.name),
        *route(N1),
        ConfirmApplication(N1, SPEC.name),
    )


def test_unchanged_application_only_rewrites_its_routes() -> None:
    # This is how a node added to the inventory gets its routes, without a restart.
    assert plan((N1, SPEC), {N1: running()}) == route(N1)


def test_application_without_ports_has_no_routes() -> None:
    bare = ContainerSpec(name="flocker-dev-job", image="job:1")
    assert plan((N1, bare), {N1: None}) == (
        StartApplication(N1, bare),
        WaitForApplication(N1, bare.name),
        ConfirmApplication(N1, bare.name),
    )


def test_changed_configuration_holds_connections_while_replacing_in_place() -> None:
    new = ContainerSpec(**{**SPEC.__dict__, "image": "es:2"})
    assert plan((N1, new), {N1: running()}) == (
        *route(None, new),
        RemoveApplication(N1, SPEC.name),
        StartApplication(N1, new),
        WaitForApplication(N1, SPEC.name),
        *route(N1, new),
        ConfirmApplication(N1, SPEC.name),
    )


def test_stopped_container_is_recreated() -> None:
    assert plan((N1, SPEC), {N1: running(up=False)}) == (
        *route(None),
        RemoveApplication(N1, SPEC.name),
        StartApplication(N1, SPEC),
        WaitForApplication(N1, SPEC.name),
        *route(N1),
        ConfirmApplication(N1, SPEC.name),
    )


def test_a_copy_started_by_hand_on_another_node_is_stopped_for_good_and_routes_stay_on_the_placed_one() -> None:
    # What the hook plans: the application's containers on the other nodes of the inventory
    # (node3's is one left stopped by an earlier repair: nothing to do), then the application.
    elsewhere = {N1: running(), N3: running(up=False)}
    assert (*plan_strays(elsewhere), *plan((N2, SPEC), {N2: running()})) == (StopStray(N1, SPEC.name), *route(N2))


def test_a_copy_started_by_hand_is_stopped_before_the_placed_one_starts_again() -> None:
    # Never on two nodes at once, not even for the start; no route pointed at the stray.
    assert (*plan_strays({N1: running(), N3: None}), *plan((N2, SPEC), {N2: running(up=False)})) == (
        StopStray(N1, SPEC.name),
        *route(None),
        RemoveApplication(N2, SPEC.name),
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        *route(N2),
        ConfirmApplication(N2, SPEC.name),
    )


def test_no_stray_plans_nothing() -> None:
    assert plan_strays({N1: None, N3: running(up=False)}) == ()


def test_stateless_move_routes_to_the_new_node_and_confirms_it_before_stopping_the_old() -> None:
    assert plan((N2, SPEC), {N1: running(), N2: None}) == (
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        *route(N2),
        ConfirmApplication(N2, SPEC.name),
        RemoveApplication(N1, SPEC.name),
    )


def test_move_already_done_by_the_volume_only_cleans_up() -> None:
    assert plan((N2, SPEC), {N1: None, N2: running()}) == route(N2)


def test_a_port_no_longer_published_loses_its_routes() -> None:
    assert plan((N1, SPEC), {N1: running()}, old_ports=(Port(9200, 9200), Port(9300, 9300))) == (
        *route(N1),
        unroute(9300),
    )


def test_a_node_that_left_the_inventory_loses_the_routes() -> None:
    assert plan_application("es", (N1, SPEC), {N1: running()}, ROUTING, SPEC.ports, dropped=(N4,)) == (
        *route(N1),
        unroute(9200, nodes=(N4,)),
    )


def test_delete_removes_routes_on_every_node_then_the_container() -> None:
    assert plan(None, {N1: running(), N2: None}, old_ports=SPEC.ports) == (
        unroute(9200),
        RemoveApplication(N1, SPEC.name),
    )


def test_delete_removes_the_containers_on_every_node_at_once() -> None:
    """One left behind by a move whose `pulumi` was killed, besides the one the state names."""
    assert plan(None, {N1: running(), N2: running(), N3: None}, old_ports=SPEC.ports) == (
        unroute(9200),
        InParallel((RemoveApplication(N1, SPEC.name), RemoveApplication(N2, SPEC.name))),
    )


def test_a_stateless_move_from_several_nodes_removes_every_old_copy_at_once() -> None:
    assert plan((N3, SPEC), {N1: running(), N2: running(), N3: None}) == (
        StartApplication(N3, SPEC),
        WaitForApplication(N3, SPEC.name),
        *route(N3),
        ConfirmApplication(N3, SPEC.name),
        InParallel((RemoveApplication(N1, SPEC.name), RemoveApplication(N2, SPEC.name))),
    )


def test_on_a_single_node_the_routes_are_a_lone_step() -> None:
    routes = Routes("es", SPEC.ports, N1, SPEC.name, 30.0)
    alone = Routing(ROUTER, (N1,), 30.0)
    assert plan_application("es", (N1, SPEC), {N1: running()}, alone) == (PointRoutes(N1, ROUTER, routes),)


def test_volume_created_once() -> None:
    assert plan_volume((N1, "v", LABELS), {N1: NodeVolumeState("v", exists=False)}) == (CreateVolume(N1, "v", LABELS),)
    assert plan_volume((N1, "v", LABELS), {N1: NodeVolumeState("v", exists=True)}) == ()


def test_volume_delete_removes_live_and_retired_copies() -> None:
    discovered = {N1: NodeVolumeState("v", exists=True), N2: NodeVolumeState("v", exists=True, retired=True)}
    assert plan_volume(None, discovered) == (InParallel((RemoveVolume(N1, "v"), RemoveVolume(N2, "v"))),)


def move_state(**changes: object) -> MoveState:
    base = {
        "source_volume": NodeVolumeState("v", exists=True),
        "destination_volume": NodeVolumeState("v", exists=False),
        "source_containers": (MountedContainer(SPEC.name, SPEC, running=True),),
        "destination_containers": (),
    }
    return MoveState(**{**base, **changes})


def two_phase_push(*before_staging: object) -> tuple:
    return (
        PREPARE,
        PushVolume(N1, N2, "v", final=False),
        ARM,
        WATCH,
        *before_staging,
        StageApplication(N2, SPEC),
        *route(None),
        StopApplication(N1, SPEC.name),
        PushVolume(N1, N2, "v", final=True),
        VerifyVolume(N1, N2, "v"),
        HandoffVolume(N1, N2, "v", LABELS),
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        *route(N2),
        FINISH,
        RemoveApplication(N1, SPEC.name),
    )


def test_two_phase_push_holds_connections_from_stop_until_up_on_the_destination() -> None:
    assert plan_move("v", LABELS, N1, N2, move_state(), ROUTING) == two_phase_push()


def test_an_application_with_a_flush_command_is_flushed_and_copied_once_more_before_it_stops() -> None:
    flushed = dataclasses.replace(SPEC, flush_command=("psql", "-c", "CHECKPOINT"))
    state = move_state(source_containers=(MountedContainer(SPEC.name, flushed, running=True),))
    expected = two_phase_push()
    phase_1 = expected.index(PushVolume(N1, N2, "v", final=False))
    flush = FlushApplication(N1, SPEC.name, ("psql", "-c", "CHECKPOINT"), "psql -c CHECKPOINT")
    moved = tuple(dataclasses.replace(step, spec=flushed) if getattr(step, "spec", None) == SPEC else step for step in expected)
    assert plan_move("v", LABELS, N1, N2, state, ROUTING) == (
        *moved[: phase_1 + 1],
        flush,
        PushVolume(N1, N2, "v", final=False),
        *moved[phase_1 + 1 :],
    )
    # A secret command is not shown.
    sealed = dataclasses.replace(flushed, sealed=("flush_command",))
    state = move_state(source_containers=(MountedContainer(SPEC.name, sealed, running=True),))
    assert describe(plan_move("v", LABELS, N1, N2, state, ROUTING)[2]) == f"flush {SPEC.name} on node1: [secret]"


def test_standalone_volume_moves_without_applications() -> None:
    assert plan_move("v", LABELS, N1, N2, move_state(source_containers=()), ROUTING) == (
        PushVolume(N1, N2, "v", final=False),
        ARM,
        PushVolume(N1, N2, "v", final=True),
        VerifyVolume(N1, N2, "v"),
        HandoffVolume(N1, N2, "v", LABELS),
    )


def test_applications_down_on_the_source_move_with_their_volume_unstarted() -> None:
    """Down with the source's engine during an earlier try and not started by its return (restart
    policy never): their data is as they left it, so nothing is held, stopped or staged; the
    stopped container goes from the source, and the application's own update starts it on the
    destination and routes to it there (`plan_application`)."""
    state = move_state(source_containers=(MountedContainer(SPEC.name, SPEC, running=False),))
    assert plan_move("v", LABELS, N1, N2, state, ROUTING) == (
        PushVolume(N1, N2, "v", final=False),
        ARM,
        PushVolume(N1, N2, "v", final=True),
        VerifyVolume(N1, N2, "v"),
        HandoffVolume(N1, N2, "v", LABELS),
        RemoveApplication(N1, SPEC.name),
    )
    assert plan((N2, SPEC), {N1: None, N2: None}) == (
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        *route(N2),
        ConfirmApplication(N2, SPEC.name),
    )


def test_rerun_after_handoff_only_finishes_the_move() -> None:
    state = move_state(
        source_volume=NodeVolumeState("v", exists=True, retired=True),
        destination_volume=NodeVolumeState("v", exists=True),
        source_containers=(MountedContainer(SPEC.name, SPEC, running=False),),
    )
    assert plan_move("v", LABELS, N1, N2, state, ROUTING) == (
        PREPARE,
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        *route(N2),
        RemoveApplication(N1, SPEC.name),
    )


def test_rerun_replaces_a_half_started_destination_container() -> None:
    state = move_state(
        source_volume=NodeVolumeState("v", exists=True, retired=True),
        destination_volume=NodeVolumeState("v", exists=True),
        source_containers=(MountedContainer(SPEC.name, SPEC, running=False),),
        destination_containers=(MountedContainer(SPEC.name, SPEC, running=False),),
    )
    assert plan_move("v", LABELS, N1, N2, state, ROUTING) == (
        PREPARE,
        RemoveApplication(N2, SPEC.name),
        StartApplication(N2, SPEC),
        WaitForApplication(N2, SPEC.name),
        *route(N2),
        RemoveApplication(N1, SPEC.name),
    )


def test_move_back_to_a_retired_copy_is_a_normal_push() -> None:
    state = move_state(destination_volume=NodeVolumeState("v", exists=True, retired=True))
    assert plan_move("v", LABELS, N1, N2, state, ROUTING)[1] == PushVolume(N1, N2, "v", final=False)


def test_nothing_to_move_is_an_error() -> None:
    with pytest.raises(PlanError, match="no live copy on node1"):
        plan_move("v", LABELS, N1, N2, move_state(source_volume=NodeVolumeState("v", exists=True, retired=True)), ROUTING)


def test_the_restore_command_of_a_node_on_tls_carries_its_certificates() -> None:
    """Typed as given, the command must reach an engine that wants a client certificate."""
    node = Node("node1", "10.0.0.1", "tcp://10.0.0.1:2376", TLSConfig("/c/ca.pem", "/c/cert.pem", "/c/key.pem"))
    with pytest.raises(PlanError) as missing:
        plan_volume((node, "v", LABELS), {node: NodeVolumeState("v", exists=False)}, recorded=True)
    assert (
        "`docker -H tcp://10.0.0.1:2376 --tlsverify --tlscacert=/c/ca.pem --tlscert=/c/cert.pem --tlskey=/c/key.pem volume create"
        in str(missing.value)
    )


def test_a_recorded_volume_gone_from_its_node_is_never_made_again_empty() -> None:
    """Deleted by hand (or lost with its node's disk): an update, or a move from there, says
    what to do instead of creating an empty volume where the data was."""
    with pytest.raises(PlanError) as missing:
        plan_volume((N1, "v", LABELS), {N1: NodeVolumeState("v", exists=False)}, recorded=True)
    message = str(missing.value)
    assert message.startswith("node node1: volume v is missing") and "does not create an empty volume" in message
    # How to restore it where it was, with the labels that make it ours again; or to start over.
    assert "`docker -H tcp://10.0.0.1:2375 volume create --label=io.flocker-pulumi.managed=true v`" in message
    assert "pulumi state delete" in message
    with pytest.raises(PlanError, match="volume v is missing"):
        plan_move("v", LABELS, N1, N2, move_state(source_volume=NodeVolumeState("v", exists=False)), ROUTING)


def test_a_move_onto_a_copy_that_a_container_started_by_hand_writes_to_is_refused() -> None:
    state = move_state(
        destination_volume=NodeVolumeState("v", exists=True, retired=True),
        destination_containers=(MountedContainer(SPEC.name, SPEC, running=True),),
    )
    with pytest.raises(PlanError) as refused:
        plan_move("v", LABELS, N1, N2, state, ROUTING)
    assert str(refused.value).startswith(
        "node node2: flocker-dev-es already runs on node2, started outside Pulumi, on the copy of v there: "
        "moving the volume there would overwrite what it wrote"
    )
    assert "`docker -H tcp://10.0.0.2:2375 rm -f flocker-dev-es`" in str(refused.value)


def test_a_move_cut_short_before_the_handoff_is_staged_again_from_scratch() -> None:
    state = move_state(
        destination_volume=NodeVolumeState("v", exists=True),
        destination_containers=(MountedContainer(SPEC.name, SPEC, running=False),),
    )
    assert plan_move("v", LABELS, N1, N2, state, ROUTING) == two_phase_push(RemoveApplication(N2, SPEC.name))


# -- the way back from a move that failed before its handoff ------------------------------

RESTART = RestartApplication(N1, SPEC.name)
UNSTAGE = RemoveStaged(N2, SPEC.name)
PARTIAL = RemoveVolume(N2, "v")


def after_failure(**changes: object) -> AfterFailure:
    """As a failure in phase 1 leaves the nodes: the application serving, a partial copy."""
    base = {
        "source_containers": (MountedContainer(SPEC.name, SPEC, running=True),),
        "destination_volume": NodeVolumeState("v", exists=True, partial=True),
        "staged": (),
        "held_ports": frozenset(),
    }
    return AfterFailure(**{**base, **changes})


def rollback(after: AfterFailure, before: MoveState | None = None) -> tuple:
    return plan_rollback("v", N1, N2, before or move_state(), after, ROUTING)


def test_a_failure_in_phase_1_removes_only_the_partial_copy() -> None:
    assert rollback(after_failure()) == (PARTIAL,)


def test_a_failure_once_stopped_restarts_routes_back_unstages_and_removes_the_partial_copy() -> None:
    after = after_failure(
        source_containers=(MountedContainer(SPEC.name, SPEC, running=False),), staged=(SPEC.name,), held_ports=frozenset({9200})
    )
    assert rollback(after) == (RESTART, *route(N1), UNSTAGE, PARTIAL)


def test_routes_held_for_other_applications_are_not_theirs_to_point_back() -> None:
    assert rollback(after_failure(held_ports=frozenset({8080}))) == (PARTIAL,)


def test_an_application_that_was_not_running_before_the_move_is_not_started() -> None:
    before = move_state(source_containers=(MountedContainer(SPEC.name, SPEC, running=False),))
    after = after_failure(source_containers=(MountedContainer(SPEC.name, SPEC, running=False),))
    assert rollback(after, before) == (PARTIAL,)


def test_a_copy_that_was_on_the_destination_before_the_move_is_kept() -> None:
    """A retired copy (the volume moving back), or one a move before partial labels left: the next move's delta starts from it."""
    before = move_state(destination_volume=NodeVolumeState("v", exists=True, retired=True))
    assert rollback(after_failure(destination_volume=NodeVolumeState("v", exists=True, retired=True)), before) == ()
    assert rollback(after_failure(destination_volume=NodeVolumeState("v", exists=True)), before) == ()


def test_a_source_that_does_not_answer_is_left_as_it_is_and_routes_are_still_pointed_back_at_it() -> None:
    after = after_failure(source_containers=None, held_ports=frozenset({9200}))
    assert rollback(after) == (*route(N1), PARTIAL)


def test_a_destination_that_does_not_answer_has_the_copy_the_move_made_removed_if_it_can_be() -> None:
    assert rollback(after_failure(destination_volume=None, staged=None)) == (PARTIAL,)
    # One it had before the move is not the move's to remove.
    before = move_state(destination_volume=NodeVolumeState("v", exists=True, retired=True))
    assert rollback(after_failure(destination_volume=None, staged=None), before) == ()
