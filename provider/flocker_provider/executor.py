"""Runs a plan, step by step, through the Docker layer. No decisions are made here."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .docker_layer import connect, translated
from .engine_protocol import Engine
from .errors import ContainerFailed, NodeUnreachable, ProviderError, RoutingFailed, brief
from .models import Node
from .progress import report
from .staging import SHELL, staged_name
from .steps import (
    ConfirmApplication,
    CreateVolume,
    Plan,
    PointRoutes,
    RemoveApplication,
    RemoveRoutes,
    RemoveVolume,
    RunBeforeStop,
    StageApplication,
    StartApplication,
    Step,
    StopApplication,
    WaitForApplication,
    describe,
)

# How long a created or replaced application must stay up once routed to: longer than a
# command that fails at once takes to end, short enough not to slow every create much.
CONFIRM_SECONDS = 1.0
# A before_stop command's time: a checkpoint of a few GB of dirty pages takes seconds; one
# that takes longer than this will not make phase 2 shorter either.
BEFORE_STOP_SECONDS = 120.0


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


def run_step(step: Step, engines: Engines, wait_timeout: float) -> None:
    if isinstance(step, PointRoutes):
        _point_routes(step, engines)
        return
    try:
        engine = engines[step.node]
    except NodeUnreachable as exc:
        if not isinstance(step, RemoveRoutes):
            raise
        _skip_unreachable(step, exc)
        return
    try:
        _run_on(engine, step, wait_timeout)
    except Exception as exc:
        failure = translated(exc, step.node)
        raise failure from failure.__cause__


def _run_on(engine: Engine, step: Step, wait_timeout: float) -> None:
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
        case RunBeforeStop(node, container, command):
            finished = engine.run_in(container, command, BEFORE_STOP_SECONDS)
            if finished is None or finished[0] != 0:
                said = f"did not end within {BEFORE_STOP_SECONDS:g}s" if finished is None else f"exited {finished[0]}: {finished[1]}"
                report(f"warning: the before_stop command of {container} on {node.name} {said}; the move goes on")
        case RemoveApplication(_, container):
            engine.remove_container(container)
            engine.remove_container(staged_name(container), timeout=0)  # of a move cut short
        case RemoveRoutes(_, router, application, ports):
            engine.remove_routes(router, application, ports)


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


def execute(plan: Plan, engines: Engines, wait_timeout: float = 120.0) -> None:
    for step in plan:
        report(describe(step))
        try:
            run_step(step, engines, wait_timeout)
        except ProviderError as exc:
            exc.within(step=describe(step))
            raise
