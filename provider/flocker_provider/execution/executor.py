"""Runs a plan, change by change, through the Docker layer. No decisions are made here.

Every kind of step runs here, a move's too: those need the move's context (its transfer
channel, its stops, its report), which the move hands in (``MoveContext``). The steps of an
``InParallel`` run on threads, here and nowhere else in a plan's run."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from flocker_provider.docker_layer.docker_node import connect, translated
from flocker_provider.docker_layer.engine_protocol import Engine
from flocker_provider.errors import ContainerFailed, NodeUnreachable, ProviderError, brief, together
from flocker_provider.execution.move_context import MoveContext, StepTime
from flocker_provider.execution.staging import SHELL, staged_name
from flocker_provider.planning.models import Node
from flocker_provider.planning.steps import (
    ArmFinalCopy,
    Change,
    ConfirmApplication,
    CreateVolume,
    FinishStop,
    FlushApplication,
    HandoffVolume,
    InParallel,
    OnNode,
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
    Step,
    StopApplication,
    StopStray,
    VerifyVolume,
    WaitForApplication,
    WatchExit,
    describe,
)
from flocker_provider.progress import report
from flocker_provider.secret_values import SHOWN_AS

# How long a created or replaced application must stay up once routed to: longer than a
# command that fails at once takes to end, short enough not to slow every create much.
CONFIRM_SECONDS = 1.0
# How long a move waits for an application's flush command (a database's checkpoint of
# gigabytes of dirty pages takes seconds) before it goes on without it.
FLUSH_TIMEOUT = 60.0


class Engines:
    """Docker connections opened on first use and closed together."""

    def __init__(self, opener: Callable[[Node], contextlib.AbstractContextManager[Engine]] = connect) -> None:
        self._opener = opener
        self._stack = contextlib.ExitStack()
        self._open: dict[Node, Engine] = {}
        # The steps of an InParallel use several nodes' engines from threads at once.
        self._lock = threading.Lock()

    def __getitem__(self, node: Node) -> Engine:
        with self._lock:
            if node not in self._open:
                self._open[node] = self._stack.enter_context(self._opener(node))
            return self._open[node]

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


@dataclass
class Run:
    """One plan's run: the engines, how long an application may take to start, the move's
    context (in a move), and the route tables read so far."""

    engines: Engines
    wait_timeout: float
    move: MoveContext | None = None
    _tables: dict[Routes, Future[dict[int, dict]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def route_table(self, routes: Routes) -> dict[int, dict]:
        """What the routers are told for ``routes``, read once for every node the routes are
        written on: the same reading everywhere, and a backend that publishes no port is one
        failure, not one per node. (A plan routes to a container once it is up, and once.)"""
        with self._lock:
            first = routes not in self._tables
            table = self._tables.setdefault(routes, Future())
        if first:
            try:
                table.set_result(_route_table(routes, self))
            except Exception as exc:  # every node's step raises this same failure
                table.set_exception(exc)
        return table.result()


def run_change(change: Change, run: Run) -> None:
    move = run.move
    match change:
        case InParallel(steps):
            _in_parallel(steps, run)
        case PointRoutes(_, router, routes):
            table = run.route_table(routes)  # before the node is asked: a backend's failure is the step's
            _on_node(change, run, lambda engine: engine.point_routes(router, table))
        case PrepareRoutes(node, router):
            with contextlib.suppress(Exception):  # the route steps themselves report what fails
                run.engines[node].prepare_routes(router)
        case PushVolume(final=final):
            context = _of(move, change)
            context.report = context.report.with_rounds(context.channel.push(final, run.wait_timeout))
        case ArmFinalCopy():
            _of(move, change).channel.arm()
        case VerifyVolume():
            _of(move, change).channel.verify(run.wait_timeout)
        case HandoffVolume(source, destination, volume, labels):
            # The destination's copy is the live one before the source's is retired: the
            # source's retirement is what says the move is past its handoff.
            run.engines[destination].make_live(volume)
            run.engines[source].retire_volume(volume, _of(move, change).channel.image, dict(labels))
        case WatchExit():
            _of(move, change).stops.watch(change)
        case FlushApplication():
            _flush(change, run.engines[change.node], _of(move, change).channel.label)
        case StopApplication() if move is not None:
            move.stopped_at = move.stopped_at or time.monotonic()
            move.stops.stop(change)
        case FinishStop():
            _of(move, change).stops.finish(change)
        case WaitForApplication() if move is not None:
            _on_node(change, run, lambda engine: _run_on(engine, change, run.wait_timeout))
            if move.stopped_at is not None:
                move.report = move.report.with_downtime(round(time.monotonic() - move.stopped_at, 3))
        case (
            CreateVolume()
            | RemoveVolume()
            | StartApplication()
            | StageApplication()
            | WaitForApplication()
            | ConfirmApplication()
            | StopApplication()
            | StopStray()
            | RestartApplication()
            | RemoveStaged()
            | RemoveApplication()
            | RemoveRoutes()
        ):
            _on_node(change, run, lambda engine: _run_on(engine, change, run.wait_timeout))
        case _:
            raise TypeError(f"no way to run {change!r}")


def _flush(step: FlushApplication, engine: Engine, label: str) -> None:
    """The flush command run; how it went is a line, whatever it was: the move goes on."""
    started = time.monotonic()
    try:
        code, output = engine.run_in_container(step.container, step.command, FLUSH_TIMEOUT)
    except Exception as exc:  # a flush only shortens the stop: its failure is not the move's
        said = f"could not run: {brief(translated(exc))}"
    else:
        seconds = time.monotonic() - started
        # A secret command's output may hold the secret: only its status is told.
        told = f": {' / '.join(output.strip().splitlines()[-3:])}" if output.strip() and step.shown != SHOWN_AS else ""
        if code == 0:
            report(f"move {label}: flushed {step.container} in {seconds:.2f}s")
            return
        said = f"still running after {FLUSH_TIMEOUT:g}s (left to end)" if code is None else f"exited {code}{told}"
    report(f"move {label}: warning: the flush command of {step.container} {said}; the move goes on, its stop writes more")


def _of(move: MoveContext | None, step: Step) -> MoveContext:
    if move is None:
        raise TypeError(f"only a move runs '{describe(step)}'")
    return move


def _in_parallel(steps: tuple[Step, ...], run: Run) -> None:
    """Every step to its end, on threads; then the failures together, each naming its node
    (a bug's is raised as it is)."""

    def outcome(step: Step) -> Exception | None:
        try:
            run_change(step, run)
        except Exception as exc:  # told once every other step has ended
            if isinstance(exc, ProviderError) and exc.node is None and (node := getattr(step, "node", None)) is not None:
                exc.node = node.name
            return exc
        return None

    with ThreadPoolExecutor(max_workers=max(len(steps), 1)) as pool:
        # One failure shared by several steps (their route table's) is told once.
        failed = [exc for exc in dict.fromkeys(pool.map(outcome, steps)) if exc is not None]
    bugs = [exc for exc in failed if not isinstance(exc, ProviderError)]
    if bugs:
        raise bugs[0]
    if failed:
        raise together([exc for exc in failed if isinstance(exc, ProviderError)])


def _warn_of_a_short_hold(routes: Routes, move: MoveContext) -> None:
    predicted = move.channel.predicted
    if predicted is not None and predicted > routes.hold_seconds:
        report(
            f"move {move.channel.label}: warning: phase 2 is predicted to take {predicted:.1f}s, longer than "
            f"the hold of {routes.hold_seconds:g}s: connections held longer are closed (raise hold_seconds)"
        )


def _on_node(step: OnNode | PointRoutes, run: Run, act: Callable[[Engine], None]) -> None:
    """The step's ``act`` on its node's engine; where the step may be skipped, a node that
    does not answer is, with a warning."""
    node = step.node
    try:
        engine = run.engines[node]
    except NodeUnreachable as exc:
        if not _skipped_when_down(step):
            raise
        _skip_unreachable(step, exc)
        return
    try:
        act(engine)
    except Exception as exc:
        failure = translated(exc, node)
        raise failure from failure.__cause__


def _skipped_when_down(step: OnNode | PointRoutes) -> bool:
    match step:
        case RemoveRoutes():
            return True
        case PointRoutes(node, _, routes):
            return node != routes.backend
        case _:
            return False


def _run_on(engine: Engine, step: OnNode, wait_timeout: float) -> None:
    match step:
        case CreateVolume(_, volume, labels):
            engine.create_volume(volume, dict(labels))
        case RemoveVolume(_, volume):
            engine.remove_volume(volume)
        case StartApplication(_, spec):
            engine.start_container(spec)
        case StageApplication(_, spec):
            if not engine.stage_container(spec):
                report(f"{spec.shown_image} has no {SHELL} to hold {spec.name} with: it starts after phase 2")
        case WaitForApplication(_, container):
            engine.wait_running(container, wait_timeout)
        case ConfirmApplication(_, container):
            engine.confirm_running(container, CONFIRM_SECONDS)
        case StopApplication(_, container):
            engine.stop_container(container)
        case StopStray(_, container):
            engine.stop_for_good(container)
        case RestartApplication(_, container):
            engine.start_existing(container)
        case RemoveApplication(_, container):
            engine.remove_container(container)
            engine.remove_container(staged_name(container), timeout=0)  # of a move cut short
        case RemoveStaged(_, container):
            engine.remove_container(staged_name(container), timeout=0)  # it never ran: nothing to stop gently
        case RemoveRoutes(_, router, application, ports):
            engine.remove_routes(router, application, ports)
        case _:
            raise TypeError(f"not a step of one node: {step!r}")


def _route_table(routes: Routes, run: Run) -> dict[int, dict]:
    backend = routes.backend
    if backend is None and run.move is not None:
        _warn_of_a_short_hold(routes, run.move)
    published = run.engines[backend].published_ports(routes.container) if backend is not None else {}
    if backend is not None and (unpublished := sorted({p.internal for p in routes.ports} - set(published))):
        # Docker lists no binding while a container is not running (a crash loop between restarts).
        raise ContainerFailed(f"{routes.container} publishes no host port for {unpublished}: is it running?", node=backend.name)
    return {
        p.external: {
            "target": f"{backend.address}:{published[p.internal]}" if backend is not None else None,
            "hold_seconds": routes.hold_seconds,
            "application": routes.application,
        }
        for p in routes.ports
    }


def _skip_unreachable(step: Step, exc: NodeUnreachable) -> None:
    # A node that is down must not block deploying or moving applications elsewhere;
    # its routes are written again by the next `pulumi up` that changes the application.
    report(f"warning: {brief(exc)}; skipped there: {describe(step)}")


def execute(plan: Plan, engines: Engines, wait_timeout: float = 120.0, move: MoveContext | None = None) -> None:
    """Runs the plan's changes in order; the first that fails ends it, its error saying which.
    In a move, each change's seconds go to its report and each change that ended to ``done``."""
    heading = f"move {move.channel.label}: " if move is not None else ""
    run = Run(engines, wait_timeout, move)
    for change in plan:
        report(heading + describe(change))
        started, started_at = time.monotonic(), round(time.time(), 3)
        try:
            run_change(change, run)
        except ProviderError as exc:
            exc.within(step=describe(change))
            raise
        except Exception as exc:
            # A move's own steps (the copy's) meet the engine's failures untranslated.
            failure = translated(exc)
            if failure is exc:
                raise
            raise failure.within(step=describe(change)) from failure.__cause__
        if move is not None:
            move.report = move.report.with_step(StepTime(describe(change), started_at, round(time.monotonic() - started, 3)))
            move.done.append(change)


def execute_all(plan: Plan, engines: Engines, wait_timeout: float, heading: str = "") -> tuple[tuple[Change, Exception | None], ...]:
    """Runs every change of the plan, whether or not one before it failed, and says how each
    went: for a way back, which must go as far as it can (each application restarted, each
    route pointed back)."""
    run = Run(engines, wait_timeout)
    outcomes: list[tuple[Change, Exception | None]] = []
    for change in plan:
        report(heading + describe(change))
        try:
            run_change(change, run)
        except Exception as exc:  # told with the others: this way back goes on
            outcomes.append((change, translated(exc)))
        else:
            outcomes.append((change, None))
    return tuple(outcomes)
