"""Pure planning: (desired state, discovered state) -> plan. No I/O here, ever."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from flocker_provider.errors import PlanError
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import ContainerSpec, MountedContainer, RouterSpec
from flocker_provider.planning.models import Node, NodeVolumeState, Port, RunningContainer
from flocker_provider.planning.steps import (
    ArmFinalCopy,
    Change,
    ConfirmApplication,
    CreateVolume,
    FinishStop,
    FlushApplication,
    HandoffVolume,
    Plan,
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
    at_once,
    steps_of,
)
from flocker_provider.secret_values import SHOWN_AS


@dataclass(frozen=True)
class Routing:
    """Where a stack's external ports are routed: its router, on every node of the inventory."""

    router: RouterSpec
    nodes: tuple[Node, ...]
    hold_seconds: float

    def point(self, application: str, ports: tuple[Port, ...], backend: Node | None, container: str) -> tuple[Change, ...]:
        """Routes on every node at once."""
        if not ports:
            return ()
        routes = Routes(application, ports, backend, container, self.hold_seconds)
        return at_once(PointRoutes(node, self.router, routes) for node in self.nodes)

    def remove(self, application: str, ports: tuple[int, ...], nodes: tuple[Node, ...] | None = None) -> tuple[Change, ...]:
        if not ports:
            return ()
        return at_once(RemoveRoutes(n, self.router, application, tuple(sorted(ports))) for n in (self.nodes if nodes is None else nodes))

    def prepare(self) -> tuple[Change, ...]:
        return at_once(PrepareRoutes(node, self.router) for node in self.nodes)


def plan_application(
    application: str,
    desired: tuple[Node, ContainerSpec] | None,
    discovered: Mapping[Node, RunningContainer | None],
    routing: Routing,
    old_ports: tuple[Port, ...] = (),
    dropped: tuple[Node, ...] = (),
) -> Plan:
    """Converge one application and its routes on every node.

    The new container is started and up before any old copy elsewhere is stopped, so an
    application without a volume is never down during a move. (With a volume, the
    volume's move has already stopped the source and started the destination.) Routes
    point at a container only once it is up there (Flocker switched them earlier, its
    issue #380); while a container is replaced in place, new connections are held.
    ``dropped`` nodes routed the application before and left the inventory: their routes go.
    """
    if desired is None:
        removal = routing.remove(application, tuple(p.external for p in old_ports))
        return (*removal, *at_once(RemoveApplication(node, c.name) for node, c in _present(discovered)))
    node, spec = desired
    steps: list = []
    here = discovered.get(node)
    starts = here is None or not here.running or here.config_hash != spec.config_hash()
    if starts:
        if here is not None:
            steps += routing.point(application, spec.ports, None, spec.name)
            steps.append(RemoveApplication(node, here.name))
        steps += [StartApplication(node, spec), WaitForApplication(node, spec.name)]
    # Every time, not only after a start: a node added to the inventory gets its routes here.
    steps += routing.point(application, spec.ports, node, spec.name)
    if starts:
        # Before an old copy elsewhere goes: if this one does not stay up, that one serves again.
        steps.append(ConfirmApplication(node, spec.name))
    steps += at_once(RemoveApplication(other, c.name) for other, c in _present(discovered) if other != node)
    kept = {p.external for p in spec.ports}
    steps += routing.remove(application, tuple(p.external for p in old_ports if p.external not in kept))
    steps += routing.remove(application, tuple(p.external for p in old_ports), dropped)
    return tuple(steps)


def plan_strays(discovered: Mapping[Node, RunningContainer | None]) -> Plan:
    """Stop the application's containers found running on nodes where it has no place
    (``discovered``: on the other nodes of the inventory), started there by hand: it must
    never run on two nodes at once, two writers on two copies of its data.

    Before anything else is done for it: no route points at such a container (routes are
    only ever written to where the application is placed), so stopping it first costs no
    connection, and the copy that is placed never starts beside it. Stopped for good and
    kept, not removed: what it wrote is not in the live copy."""
    return tuple(StopStray(node, c.name) for node, c in _present(discovered) if c.running)


def plan_volume(
    desired: tuple[Node, str, tuple[tuple[str, str], ...]] | None,
    discovered: Mapping[Node, NodeVolumeState],
    recorded: bool = False,
) -> Plan:
    """Converge one volume that is not moving (moves are planned by the migration planner).

    A volume the state already has (``recorded``) that is gone from its node is not created
    again: empty, it would take the place of the data without a word."""
    present = [(node, v) for node, v in sorted(discovered.items(), key=lambda kv: kv[0].name) if v.exists]
    if desired is None:
        return at_once(RemoveVolume(node, v.name) for node, v in present)
    node, name, labels = desired
    if discovered.get(node, NodeVolumeState(name, exists=False)).exists:
        return ()
    if recorded:
        raise volume_missing(name, node, labels)
    return (CreateVolume(node, name, labels),)


def volume_missing(volume: str, node: Node, labels: tuple[tuple[str, str], ...]) -> PlanError:
    """A volume the state has, gone from its node (deleted by hand, a node that lost its disk)."""
    create = shlex.join(node.docker_cli("volume", "create", *(f"--label={k}={v}" for k, v in labels), volume))
    return PlanError(
        f"volume {volume} is missing, where the last operation left it (deleted outside Pulumi, or the node lost it); "
        "flocker-pulumi does not create an empty volume in place of one that held data",
        node=node.name,
        remedy=(
            f"restore it on {node.name} (`{create}`, then put its data back in) and run `pulumi up` again; or, to start "
            "over with an empty volume, remove it from the state with `pulumi state delete <its URN> --target-dependents` "
            "(`pulumi stack --show-urns` lists them) and run `pulumi up`"
        ),
    )


def _present(discovered: Mapping[Node, RunningContainer | None]) -> list[tuple[Node, RunningContainer]]:
    return [(n, c) for n, c in sorted(discovered.items(), key=lambda kv: kv[0].name) if c is not None]


@dataclass(frozen=True)
class MoveState:
    """What the two nodes of a move hold right now."""

    source_volume: NodeVolumeState
    destination_volume: NodeVolumeState
    source_containers: tuple[MountedContainer, ...]
    destination_containers: tuple[MountedContainer, ...]


def plan_move(
    volume: str,
    labels: tuple[tuple[str, str], ...],
    source: Node,
    destination: Node,
    state: MoveState,
    routing: Routing,
) -> Plan:
    """Two-phase push of ``volume`` and the applications that mount it.

    Re-planning from discovered state is what makes `pulumi up` safe to re-run: a move
    that failed after the handoff only has its remaining steps left. New connections to
    the applications are held on every node from right before they stop on the source
    until they are up on the destination.
    """
    handed_over = state.source_volume.retired and state.destination_volume.exists and not state.destination_volume.retired
    on_destination = {c.name for c in state.destination_containers if c.running}
    if handed_over:
        steps: list = []
        for c in state.source_containers:
            if c.name not in on_destination:
                steps += _start_on(destination, c, state.destination_containers)
            steps += _route_to(routing, destination, c)
            steps.append(RemoveApplication(source, c.name))
        return _routes_prepared(routing, steps)
    if not state.source_volume.exists:
        raise volume_missing(volume, source, labels)
    if state.source_volume.retired:
        raise PlanError(
            f"volume {volume} has no live copy on {source.name} to move to {destination.name}",
            remedy="run `pulumi refresh` to see where it is, then `pulumi up` again",
        )
    _refuse_strays(volume, destination, state.destination_containers)
    running = [c for c in state.source_containers if c.running]
    arm = ArmFinalCopy(source, destination, volume)
    steps = [PushVolume(source, destination, volume, final=False)]
    flushes = [_flush(source, c) for c in running if c.spec.flush_command]
    if flushes:
        # Another round after the flush copies what it wrote while the application serves.
        steps += [*flushes, PushVolume(source, destination, volume, final=False)]
    steps.append(arm)
    steps += [WatchExit(source, c.name) for c in running]
    for c in running:
        steps += [*_stale(destination, c, state.destination_containers), StageApplication(destination, c.spec)]
    for c in running:
        steps += _route_to(routing, None, c)
    steps += [StopApplication(source, c.name) for c in running]
    steps += [
        PushVolume(source, destination, volume, final=True),
        VerifyVolume(source, destination, volume),
        HandoffVolume(source, destination, volume, labels),
    ]
    for c in running:
        steps += [StartApplication(destination, c.spec), WaitForApplication(destination, c.name)]
        steps += _route_to(routing, destination, c)
    for c in state.source_containers:
        # The engine's own end of a stop goes on in the background until here (move_context.Stops).
        steps += [*([FinishStop(source, c.name)] if c.running else []), RemoveApplication(source, c.name)]
    return _routes_prepared(routing, steps)


def _flush(node: Node, container: MountedContainer) -> FlushApplication:
    command = container.spec.flush_command or ()
    shown = SHOWN_AS if "flush_command" in container.spec.sealed else shlex.join(command)
    return FlushApplication(node, container.name, command, shown)


def _refuse_strays(volume: str, destination: Node, present: tuple[MountedContainer, ...]) -> None:
    """Before the handoff nothing of the move runs on the destination: one running there was
    started by hand (the volume's move comes before the application's update, which would
    stop it), and has written to the copy there, which the move would make the source's."""
    for c in present:
        if c.running:
            remove = shlex.join(destination.docker_cli("rm", "-f", c.name))
            raise PlanError(
                f"{c.name} already runs on {destination.name}, started outside Pulumi, on the copy of {volume} there: "
                "moving the volume there would overwrite what it wrote",
                node=destination.name,
                remedy=f"copy out of that volume what you need of it, remove the container (`{remove}`), then run `pulumi up` again",
            )


@dataclass(frozen=True)
class AfterFailure:
    """What the nodes of a move that failed before its handoff hold, discovered again; None
    for what a node whose engine does not answer holds."""

    source_containers: tuple[MountedContainer, ...] | None
    destination_volume: NodeVolumeState | None
    # The source's containers whose staged one is on the destination.
    staged: tuple[str, ...] | None
    # External ports whose new connections are held on some node of the routing.
    held_ports: frozenset[int] = frozenset()


def plan_rollback(volume: str, source: Node, destination: Node, before: MoveState, after: AfterFailure, routing: Routing) -> Plan:
    """The way back from a move of ``volume`` that failed before its handoff, from the state
    the move was planned from (``before``) and what its nodes hold now (``after``).

    What ran on the source and is stopped there starts again, held routes point at the
    source again, what was staged on the destination goes, and so does the partial copy
    (never a copy that was there before the move: a retired one is kept for the next
    move's delta). A destination that does not answer and had no copy before may hold the
    one the move made: its removal is tried, so that what is left is said.
    """
    running = [c for c in before.source_containers if c.running]
    steps: list = []
    if after.source_containers is not None:
        stopped = {c.name for c in after.source_containers if not c.running}
        steps += [RestartApplication(source, c.name) for c in running if c.name in stopped]
    for c in running:
        if {p.external for p in c.spec.ports} & after.held_ports:
            steps += _route_to(routing, source, c)
    steps += [RemoveStaged(destination, name) for name in after.staged or ()]
    copy = after.destination_volume
    if copy.partial if copy is not None else not before.destination_volume.exists:
        steps.append(RemoveVolume(destination, volume))
    return tuple(steps)


def _routes_prepared(routing: Routing, steps: list) -> Plan:
    """Routers ready on every node before anything else, when the move writes routes."""
    if any(isinstance(step, PointRoutes) for change in steps for step in steps_of(change)):
        return (*routing.prepare(), *steps)
    return tuple(steps)


def _route_to(routing: Routing, backend: Node | None, container: MountedContainer) -> tuple[Change, ...]:
    application = dict(container.spec.labels).get(L.RESOURCE, container.name)
    return routing.point(application, container.spec.ports, backend, container.name)


def _start_on(node: Node, container: MountedContainer, present: tuple[MountedContainer, ...]) -> list:
    return [*_stale(node, container, present), StartApplication(node, container.spec), WaitForApplication(node, container.name)]


def _stale(node: Node, container: MountedContainer, present: tuple[MountedContainer, ...]) -> list[RemoveApplication]:
    """A container of that name left on the destination (a move cut short) goes before the new one starts."""
    return [RemoveApplication(node, c.name) for c in present if c.name == container.name]
