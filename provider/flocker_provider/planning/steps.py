"""Steps of a plan: verbs, as immutable values. A plan is a tuple of changes, run in order:
a step, or steps of one node each run at once (``InParallel``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from flocker_provider.execution.staging import staged_name
from flocker_provider.planning.containers import ContainerSpec, RouterSpec
from flocker_provider.planning.models import Node, Port


@dataclass(frozen=True)
class CreateVolume:
    node: Node
    volume: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RemoveVolume:
    node: Node
    volume: str


@dataclass(frozen=True)
class StartApplication:
    node: Node
    spec: ContainerSpec


@dataclass(frozen=True)
class StageApplication:
    """Create and start the container of a moving application on its destination during
    phase 1, held before its first instruction; ``StartApplication`` then lets it through
    once the data is there (see staging.py). Images that cannot be held start from scratch then."""

    node: Node
    spec: ContainerSpec


@dataclass(frozen=True)
class WaitForApplication:
    node: Node
    container: str


@dataclass(frozen=True)
class ConfirmApplication:
    """Still up a moment after a create or replacement was routed to: a command that exits
    at once can look "running" to the wait, and even publish its port, for some
    milliseconds. Not in a move's cutover, whose downtime it would be."""

    node: Node
    container: str


@dataclass(frozen=True)
class StopApplication:
    """Stop the container but keep it, so a failed move can start it again."""

    node: Node
    container: str


@dataclass(frozen=True)
class FinishStop:
    """Wait for the end of the engine's own stop of ``container``, which a move's
    ``StopApplication`` left going on in the background (taking the container's network
    down, 0.2-0.4 s): before the container is removed."""

    node: Node
    container: str


@dataclass(frozen=True)
class StopStray:
    """Stop, for good, a container of the application found running on a node where it must
    not (started there by hand): its restart policy goes too, so that not even the engine's
    own restart starts it again. Kept, not removed: what it wrote, in its volume there or in
    its own file system, is not in the live copy, and only a person can say what to keep."""

    node: Node
    container: str


@dataclass(frozen=True)
class RestartApplication:
    """Start again a container a failed move stopped: it kept its configuration and its data."""

    node: Node
    container: str


@dataclass(frozen=True)
class RemoveStaged:
    """Remove the container a failed move staged for ``container`` (it never ran the application)."""

    node: Node
    container: str


@dataclass(frozen=True)
class WatchExit:
    """Start watching for the end of ``container``'s processes, which a later
    ``StopApplication`` waits for: the watch's own start (an exec, 40-100 ms) is then
    paid while the application still serves."""

    node: Node
    container: str


@dataclass(frozen=True)
class FlushApplication:
    """Run the application's flush command (``command``, shown as ``shown``) in ``container``
    during a move, while it still serves, before the last pre-copy round: what it keeps in
    memory (a database's dirty pages) is written then and copied by that round, so its stop
    has less to write and phase 2 less to send. A failure is reported and the move goes on:
    a flush only shortens the stop."""

    node: Node
    container: str
    command: tuple[str, ...]
    shown: str


@dataclass(frozen=True)
class RemoveApplication:
    """Stop and remove the container: its state lives in its volume, not in the container."""

    node: Node
    container: str


@dataclass(frozen=True)
class PushVolume:
    """Copy a volume node to node; ``final`` is phase 2 (the application is stopped).

    Phase 1 repeats rounds while the remaining delta keeps shrinking (pre-copy).
    """

    source: Node
    destination: Node
    volume: str
    final: bool


@dataclass(frozen=True)
class ArmFinalCopy:
    """Start phase 2's round and the verification ahead, waiting to be fired by
    ``PushVolume(final=True)`` and ``VerifyVolume``: their execs' start and load are then
    not paid while the application is stopped. The source's retirement marker is made
    then too, for ``HandoffVolume`` to rename."""

    source: Node
    destination: Node
    volume: str


@dataclass(frozen=True)
class VerifyVolume:
    """Compare the destination copy with the source (file list, sizes, times)."""

    source: Node
    destination: Node
    volume: str


@dataclass(frozen=True)
class HandoffVolume:
    """The destination copy becomes the live one; the source copy is kept, retired."""

    source: Node
    destination: Node
    volume: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Routes:
    """What every node's router is told of ``application``: its external ``ports`` go to its
    container ``container`` on ``backend``, or new connections are held (``backend`` None)
    for up to ``hold_seconds``. The container's published host ports are looked up when the
    routes are written: Docker picks them when the container starts."""

    application: str
    ports: tuple[Port, ...]
    backend: Node | None
    container: str
    hold_seconds: float


@dataclass(frozen=True)
class PointRoutes:
    """Write ``routes`` on ``node``; its router is started where it is not running. A hold
    ends only once the router has read it, so that no connection reaches a container about
    to stop. The planner writes them on every node at once (``InParallel``): a move's
    downtime includes the hold and the route to the destination, and one node after another
    cost 0.1 s per node."""

    node: Node
    router: RouterSpec
    routes: Routes


@dataclass(frozen=True)
class PrepareRoutes:
    """On ``node``, the router running and a route session open, so that a move's hold and
    its routes to the destination are written fast while the application is down. A failure
    here is left to the route steps to report."""

    node: Node
    router: RouterSpec


@dataclass(frozen=True)
class RemoveRoutes:
    """Remove ``application``'s routes of external ``ports`` on ``node``; the router goes with
    the last route. A route another application took over (a renamed one) stays."""

    node: Node
    router: RouterSpec
    application: str
    ports: tuple[int, ...]


Step = (
    CreateVolume
    | RemoveVolume
    | StartApplication
    | StageApplication
    | WaitForApplication
    | ConfirmApplication
    | StopApplication
    | FinishStop
    | StopStray
    | RestartApplication
    | RemoveStaged
    | WatchExit
    | FlushApplication
    | RemoveApplication
    | PushVolume
    | ArmFinalCopy
    | VerifyVolume
    | HandoffVolume
    | PrepareRoutes
    | PointRoutes
    | RemoveRoutes
)


@dataclass(frozen=True)
class InParallel:
    """Steps of one node each that do not depend on one another, run at once. Each runs to
    its end; what failed is then told together, each failure naming its node."""

    steps: tuple[Step, ...]


Change = Step | InParallel
Plan = tuple[Change, ...]
# The steps that one node's engine runs alone.
OnNode = (
    CreateVolume
    | RemoveVolume
    | StartApplication
    | StageApplication
    | WaitForApplication
    | ConfirmApplication
    | StopApplication
    | StopStray
    | RestartApplication
    | RemoveStaged
    | RemoveApplication
    | RemoveRoutes
)


def at_once(steps: Iterable[Step]) -> tuple[Change, ...]:
    """``steps`` as one change of a plan that runs them at once: none for none, a lone step as itself."""
    found = tuple(steps)
    return (InParallel(found),) if len(found) > 1 else found


def steps_of(change: Change) -> tuple[Step, ...]:
    match change:
        case InParallel(steps):
            return steps
        case _:
            return (change,)


def describe(change: Change) -> str:
    """One line for people reading `pulumi up` output; steps at once that differ only in
    their node are one line, naming every node."""
    match change:
        case InParallel(steps) if steps and _alike(steps):
            return _line(steps[0], ", ".join(_node(step).name for step in steps))
        case InParallel(steps):
            return "; ".join(describe(step) for step in steps)
        case _:
            node = _node(change)
            return _line(change, node.name if node is not None else "")


def _node(step: Step) -> Node | None:
    return getattr(step, "node", None)


def _alike(steps: tuple[Step, ...]) -> bool:
    first = _node(steps[0])
    return first is not None and all(_node(step) is not None and replace(step, node=first) == steps[0] for step in steps)


def _line(step: Step, where: str) -> str:
    """The step's line, ``where`` naming its node (or nodes)."""
    match step:
        case CreateVolume(_, volume, _):
            return f"create volume {volume} on {where}"
        case RemoveVolume(_, volume):
            return f"remove volume {volume} from {where}"
        case StartApplication(_, spec):
            return f"start {spec.name} ({spec.shown_image}) on {where}"
        case StageApplication(_, spec):
            return f"stage {spec.name} ({spec.shown_image}) on {where}, held until its data is there"
        case WaitForApplication(_, container):
            return f"wait for {container} on {where}"
        case ConfirmApplication(_, container):
            return f"confirm {container} stays up on {where}"
        case StopApplication(_, container):
            return f"stop {container} on {where}"
        case StopStray(_, container):
            return f"stop {container} on {where} for good (kept): the application must not run there"
        case FinishStop(_, container):
            return f"finish stopping {container} on {where}"
        case RestartApplication(_, container):
            return f"start {container} again on {where}"
        case RemoveStaged(_, container):
            return f"remove {staged_name(container)} from {where}"
        case WatchExit(_, container):
            return f"watch for the end of {container} on {where}"
        case FlushApplication(_, container, _, shown):
            return f"flush {container} on {where}: {shown}"
        case RemoveApplication(_, container):
            return f"remove {container} from {where}"
        case PushVolume(source, destination, volume, final):
            phase = "phase 2: copy what changed in" if final else "phase 1: copy"
            return f"{phase} {volume} from {source.name} to {destination.name}"
        case ArmFinalCopy(source, destination, volume):
            return f"arm phase 2 and the verification of {volume} from {source.name} to {destination.name}"
        case VerifyVolume(source, destination, volume):
            return f"verify {volume} on {destination.name} against {source.name}"
        case HandoffVolume(source, destination, volume, _):
            return f"hand {volume} over from {source.name} to {destination.name}"
        case PrepareRoutes():
            return f"prepare routes on {where}"
        case PointRoutes(_, _, Routes(application, ports, backend, _, hold)):
            listed = ", ".join(str(p.external) for p in ports)
            if backend is None:
                return f"hold new connections to {application} (port {listed}) on {where} for up to {hold:g}s"
            return f"route port {listed} on {where} to {application} on {backend.name}"
        case RemoveRoutes(_, _, application, ports):
            return f"remove routes of {application} (port {', '.join(map(str, ports))}) from {where}"
    raise TypeError(step)
