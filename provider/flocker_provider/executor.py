"""Runs a plan, step by step, through the Docker layer. No decisions are made here.

Every kind of step runs here, a move's too: those need the move's context (its transfer
channel, its stops, its report), which the move hands in (``MoveContext``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .docker_layer import connect, translated
from .engine_protocol import Engine
from .errors import ContainerFailed, NodeUnreachable, ProviderError, RoutingFailed, brief
from .models import Node
from .move_context import MoveContext
from .progress import report
from .staging import SHELL, staged_name
from .steps import (
    ArmFinalCopy,
    ConfirmApplication,
    CreateVolume,
    HandoffVolume,
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

# How long a created or replaced application must stay up once routed to: longer than a
# command that fails at once takes to end, short enough not to slow every create much.
CONFIRM_SECONDS = 1.0


class Engines:
    """Docker connections opened on first use and closed together."""

    def __init__(self, opener: Callable[[Node], contextlib.AbstractContextManager[Engine]] = connect) -> None:
        self._opener = opener
        self._stack = contextlib.ExitStack()
        self._open: dict[Node, Engine] = {}
        # Route steps use several nodes' engines from threads at once.
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


def run_step(step: Step, engines: Engines, wait_timeout: float, move: MoveContext | None = None) -> None:
    match step:
        case PointRoutes():
            if move is not None and step.backend is None:
                _warn_of_a_short_hold(step, move)
            _point_routes(step, engines)
        case PrepareRoutes():
            _prepare_routes(step, engines)
        case PushVolume(final=final):
            _of(move, step).report.rounds += _of(move, step).channel.push(final, wait_timeout)
        case ArmFinalCopy():
            _of(move, step).channel.arm()
        case VerifyVolume():
            _of(move, step).channel.verify(wait_timeout)
        case HandoffVolume(source, destination, volume, labels):
            # The destination's copy is the live one before the source's is retired: the
            # source's retirement is what says the move is past its handoff.
            engines[destination].make_live(volume)
            engines[source].retire_volume(volume, _of(move, step).channel.image, dict(labels))
        case WatchExit():
            _of(move, step).stops.watch(step)
        case StopApplication() if move is not None:
            move.stopped_at = move.stopped_at or time.monotonic()
            move.stops.stop(step)
        case RemoveApplication() if move is not None:
            move.stops.settle()  # the engine's own stop, asked for in the background, ends first
            _on_node(step, engines, wait_timeout)
        case WaitForApplication() if move is not None:
            _on_node(step, engines, wait_timeout)
            if move.stopped_at is not None:
                move.report.downtime_seconds = round(time.monotonic() - move.stopped_at, 3)
        case _:
            _on_node(step, engines, wait_timeout)


def _of(move: MoveContext | None, step: Step) -> MoveContext:
    if move is None:
        raise TypeError(f"only a move runs '{describe(step)}'")
    return move


def _warn_of_a_short_hold(step: PointRoutes, move: MoveContext) -> None:
    predicted = move.channel.predicted
    if predicted is not None and predicted > step.hold_seconds:
        report(
            f"move {move.channel.label}: warning: phase 2 is predicted to take {predicted:.1f}s, longer than "
            f"the hold of {step.hold_seconds:g}s: connections held longer are closed (raise hold_seconds)"
        )


def _on_node(step: OnNode, engines: Engines, wait_timeout: float) -> None:
    node = step.node
    try:
        engine = engines[node]
    except NodeUnreachable as exc:
        if not isinstance(step, RemoveRoutes):
            raise
        _skip_unreachable(step, exc)
        return
    try:
        _run_on(engine, step, wait_timeout)
    except Exception as exc:
        failure = translated(exc, node)
        raise failure from failure.__cause__


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
                report(f"{spec.image} has no {SHELL} to hold {spec.name} with: it starts after phase 2")
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


def _prepare_routes(step: PrepareRoutes, engines: Engines) -> None:
    def prepare(node: Node) -> None:
        with contextlib.suppress(Exception):  # the route steps themselves report what fails
            engines[node].prepare_routes(step.router)

    with ThreadPoolExecutor(max_workers=max(len(step.nodes), 1)) as pool:
        list(pool.map(prepare, step.nodes))


def _point_routes(step: PointRoutes, engines: Engines) -> None:
    backend = step.backend
    published = engines[backend].published_ports(step.container) if backend is not None else {}
    if backend is not None and (unpublished := sorted({p.internal for p in step.ports} - set(published))):
        # Docker lists no binding while a container is not running (a crash loop between restarts).
        raise ContainerFailed(f"{step.container} publishes no host port for {unpublished}: is it running?", node=backend.name)
    routes = {
        p.external: {
            "target": f"{backend.address}:{published[p.internal]}" if backend is not None else None,
            "hold_seconds": step.hold_seconds,
            "application": step.application,
        }
        for p in step.ports
    }

    def write(node: Node) -> ProviderError | None:
        try:
            engine = engines[node]
        except NodeUnreachable as exc:
            if node == backend:
                raise
            _skip_unreachable(step, exc)
            return None
        try:
            engine.point_routes(step.router, routes)
        except Exception as exc:  # reported after every other node was written
            error = translated(exc, node)
            if not isinstance(error, ProviderError):
                raise
            if error.node is None:
                error.node = node.name
            return error
        return None

    with ThreadPoolExecutor(max_workers=len(step.nodes)) as pool:
        failed = [error for error in pool.map(write, step.nodes) if error]
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise RoutingFailed("; ".join(error.summary() for error in failed))


def _skip_unreachable(step: Step, exc: NodeUnreachable) -> None:
    # A node that is down must not block deploying or moving applications elsewhere;
    # its routes are written again by the next `pulumi up` that changes the application.
    report(f"warning: {brief(exc)}; skipped there: {describe(step)}")


def execute(plan: Plan, engines: Engines, wait_timeout: float = 120.0, move: MoveContext | None = None) -> None:
    """Runs the plan's steps in order; the first that fails ends it, its error saying which.
    In a move, each step's seconds go to its report and each step that ended to ``done``."""
    heading = f"move {move.channel.label}: " if move is not None else ""
    for step in plan:
        report(heading + describe(step))
        started, started_at = time.monotonic(), round(time.time(), 3)
        try:
            run_step(step, engines, wait_timeout, move)
        except ProviderError as exc:
            exc.within(step=describe(step))
            raise
        except Exception as exc:
            # A move's own steps (the copy's) meet the engine's failures untranslated.
            failure = translated(exc)
            if failure is exc:
                raise
            raise failure.within(step=describe(step)) from failure.__cause__
        if move is not None:
            move.report.steps.append({"step": describe(step), "started_at": started_at, "seconds": round(time.monotonic() - started, 3)})
            move.done.append(step)
    if move is not None:
        move.stops.settle()


def execute_all(plan: Plan, engines: Engines, wait_timeout: float, heading: str = "") -> tuple[tuple[Step, Exception | None], ...]:
    """Runs every step of the plan, whether or not one before it failed, and says how each
    went: for a way back, which must go as far as it can (each application restarted, each
    route pointed back)."""
    outcomes: list[tuple[Step, Exception | None]] = []
    for step in plan:
        report(heading + describe(step))
        try:
            run_step(step, engines, wait_timeout)
        except Exception as exc:  # told with the others: this way back goes on
            outcomes.append((step, translated(exc)))
        else:
            outcomes.append((step, None))
    return tuple(outcomes)
