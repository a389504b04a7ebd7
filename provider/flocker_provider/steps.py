"""Steps of a plan: verbs, as immutable values. A plan is a tuple of them, run in order."""

from __future__ import annotations

from dataclasses import dataclass

from .containers import ContainerSpec, RouterSpec
from .models import Node, Port
from .staging import staged_name


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
    not paid while the application is stopped."""

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
class PointRoutes:
    """On every node of ``nodes`` at once, route ``application``'s external ports to its
    container ``container`` on ``backend``, or hold new connections (``backend`` None) for
    up to ``hold_seconds``.

    At once, because a move's downtime includes the hold and the route to the destination:
    one node after another cost 0.1 s per node. A router is started on a node where it is
    not running. The container's published host ports are looked up when the step runs:
    Docker picks them when the container starts. A hold ends only once the routers have
    read it, so that no connection reaches a container about to stop.
    """

    nodes: tuple[Node, ...]
    router: RouterSpec
    application: str
    ports: tuple[Port, ...]
    backend: Node | None
    container: str
    hold_seconds: float


@dataclass(frozen=True)
class PrepareRoutes:
    """On every node of ``nodes`` at once, the router running and a route session open, so
    that a move's hold and its routes to the destination are written fast while the
    application is down. A failure here is left to the route steps to report."""

    nodes: tuple[Node, ...]
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
    | StopStray
    | RestartApplication
    | RemoveStaged
    | WatchExit
    | RemoveApplication
    | PushVolume
    | ArmFinalCopy
    | VerifyVolume
    | HandoffVolume
    | PrepareRoutes
    | PointRoutes
    | RemoveRoutes
)
Plan = tuple[Step, ...]
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


def describe(step: Step) -> str:
    """One line for people reading `pulumi up` output."""
    match step:
        case CreateVolume(node, volume, _):
            return f"create volume {volume} on {node.name}"
        case RemoveVolume(node, volume):
            return f"remove volume {volume} from {node.name}"
        case StartApplication(node, spec):
            return f"start {spec.name} ({spec.image}) on {node.name}"
        case StageApplication(node, spec):
            return f"stage {spec.name} ({spec.image}) on {node.name}, held until its data is there"
        case WaitForApplication(node, container):
            return f"wait for {container} on {node.name}"
        case ConfirmApplication(node, container):
            return f"confirm {container} stays up on {node.name}"
        case StopApplication(node, container):
            return f"stop {container} on {node.name}"
        case StopStray(node, container):
            return f"stop {container} on {node.name} for good (kept): the application must not run there"
        case RestartApplication(node, container):
            return f"start {container} again on {node.name}"
        case RemoveStaged(node, container):
            return f"remove {staged_name(container)} from {node.name}"
        case WatchExit(node, container):
            return f"watch for the end of {container} on {node.name}"
        case RemoveApplication(node, container):
            return f"remove {container} from {node.name}"
        case PushVolume(source, destination, volume, final):
            phase = "phase 2: copy what changed in" if final else "phase 1: copy"
            return f"{phase} {volume} from {source.name} to {destination.name}"
        case ArmFinalCopy(source, destination, volume):
            return f"arm phase 2 and the verification of {volume} from {source.name} to {destination.name}"
        case VerifyVolume(source, destination, volume):
            return f"verify {volume} on {destination.name} against {source.name}"
        case HandoffVolume(source, destination, volume, _):
            return f"hand {volume} over from {source.name} to {destination.name}"
        case PrepareRoutes(nodes, _):
            return f"prepare routes on {', '.join(n.name for n in nodes)}"
        case PointRoutes(nodes, _, application, ports, backend, _, hold):
            listed = ", ".join(str(p.external) for p in ports)
            where = ", ".join(n.name for n in nodes)
            if backend is None:
                return f"hold new connections to {application} (port {listed}) on {where} for up to {hold:g}s"
            return f"route port {listed} on {where} to {application} on {backend.name}"
        case RemoveRoutes(node, _, application, ports):
            return f"remove routes of {application} (port {', '.join(map(str, ports))}) from {node.name}"
    raise TypeError(step)
