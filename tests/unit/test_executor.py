"""The executor against stand-in engines: route steps on every node at once, failures named by node."""

import contextlib
import threading
import typing
from collections.abc import Iterator
from unittest import mock

import pytest
from fake_engine import FakeEngine

from flocker_provider.errors import NodeUnreachable, NotOurs, ProviderError, RoutingFailed
from flocker_provider.execution.executor import Engines, Run, execute, run_change
from flocker_provider.execution.move_context import MoveContext, MoveReport, Stops
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import ContainerSpec, RouterSpec, router_spec
from flocker_provider.planning.models import Node, Port
from flocker_provider.planning.steps import FlushApplication, InParallel, PointRoutes, RemoveVolume, Routes, Step, describe

NODES = tuple(Node(f"node{i}", f"10.0.0.{i}", f"tcp://10.0.0.{i}:2375") for i in (1, 2, 3))
N1, N2, N3 = NODES
ROUTER = router_spec("p", "dev", "flocker/base:local")
PORTS = (Port(9200, 9200),)
ES = ContainerSpec("flocker-dev-es", "es:1", ports=PORTS, labels=((L.MANAGED, "true"),))


class AtOnce(FakeEngine):
    """Each route write waits at a barrier, so writes made one after another would never pass it."""

    def __init__(self, node: Node, barrier: threading.Barrier) -> None:
        super().__init__(node)
        self.barrier = barrier

    def point_routes(self, router: RouterSpec, routes: dict[int, dict]) -> None:
        self.barrier.wait(timeout=5)
        super().point_routes(router, routes)


class Refusing(FakeEngine):
    def point_routes(self, router: RouterSpec, routes: dict[int, dict]) -> None:
        raise RoutingFailed("writing routes failed")


def routes_to(backend: Node) -> InParallel:
    """The plan's change that routes es to ``backend`` on every node at once."""
    routes = Routes("es", PORTS, backend, "flocker-dev-es", 30.0)
    return InParallel(tuple(PointRoutes(n, ROUTER, routes) for n in NODES))


def running_es(fakes: dict[Node, FakeEngine], node: Node) -> int:
    """Starts the application on ``node``; the host port it publishes 9200 on."""
    fakes[node].start_container(ES)
    return fakes[node].published_ports(ES.name)[9200]


def engines_of(fakes: dict[Node, FakeEngine], down: tuple[Node, ...] = ()) -> Engines:
    @contextlib.contextmanager
    def opener(node: Node) -> Iterator[FakeEngine]:
        if node in down:
            raise NodeUnreachable("Docker engine did not answer", node=node.name)
        yield fakes[node]

    return Engines(opener)  # type: ignore[arg-type]


def test_routes_are_written_on_every_node_at_once() -> None:
    barrier = threading.Barrier(len(NODES))
    fakes: dict[Node, FakeEngine] = {n: AtOnce(n, barrier) for n in NODES}
    port = running_es(fakes, N2)
    step = routes_to(N2)
    with engines_of(fakes) as engines:
        execute((step,), engines)
    expected = {9200: {"target": f"10.0.0.2:{port}", "hold_seconds": 30.0, "application": "es"}}
    assert [fakes[n].routes for n in NODES] == [expected] * 3


def test_a_node_that_does_not_answer_is_skipped_unless_it_runs_the_application(capsys: pytest.CaptureFixture[str]) -> None:
    fakes = {n: FakeEngine(n) for n in NODES}
    running_es(fakes, N1)
    with engines_of(fakes, down=(N3,)) as engines:
        execute((routes_to(N1),), engines)
    assert fakes[N2].routes
    assert "warning: node node3: Docker engine did not answer; skipped there: route port 9200" in capsys.readouterr().out
    with engines_of(fakes, down=(N1,)) as engines, pytest.raises(ProviderError, match="node node1: Docker engine did not answer"):
        execute((routes_to(N1),), engines)


def test_a_failed_write_names_its_node_after_the_other_nodes_are_written() -> None:
    fakes = {n: Refusing(n) if n == N2 else FakeEngine(n) for n in NODES}
    running_es(fakes, N1)
    step = routes_to(N1)
    with engines_of(fakes) as engines, pytest.raises(ProviderError) as failed:
        execute((step,), engines)
    expected = "step 'route port 9200 on node1, node2, node3 to es on node1' failed: node node2: writing routes failed"
    assert failed.value.summary() == expected
    assert fakes[N1].routes and fakes[N3].routes


def test_a_backend_that_publishes_no_port_is_not_routed_to() -> None:
    """Between two restarts of a crash loop Docker lists no binding: the step says so, and writes nothing."""
    fakes = {n: FakeEngine(n) for n in NODES}
    running_es(fakes, N1)
    fakes[N1].stop_container(ES.name)
    step = routes_to(N1)
    with engines_of(fakes) as engines, pytest.raises(ProviderError) as failed:
        execute((step,), engines)
    assert failed.value.summary().endswith("failed: node node1: flocker-dev-es publishes no host port for [9200]: is it running?")
    assert not any(fake.routes for fake in fakes.values())


def test_failures_on_several_nodes_are_told_together_as_the_kind_they_share() -> None:
    fakes = {n: FakeEngine(n) if n == N1 else Refusing(n) for n in NODES}
    running_es(fakes, N1)
    with engines_of(fakes) as engines, pytest.raises(RoutingFailed) as failed:
        execute((routes_to(N1),), engines)
    assert failed.value.summary() == (
        "step 'route port 9200 on node1, node2, node3 to es on node1' failed: "
        "node node2: writing routes failed; node node3: writing routes failed"
    )
    assert fakes[N1].routes


class Failing(FakeEngine):
    """Its volume removals fail with ``error``."""

    def __init__(self, node: Node, error: Exception) -> None:
        super().__init__(node)
        self.error = error

    def remove_volume(self, name: str) -> None:
        raise self.error


def test_failures_of_several_kinds_are_one_provider_error_and_every_step_runs_to_its_end() -> None:
    fakes = {N1: Failing(N1, NotOurs("volume v is not ours")), N2: FakeEngine(N2), N3: Failing(N3, RoutingFailed("no answer"))}
    fakes[N2].create_volume("v", {L.MANAGED: "true"})
    with engines_of(fakes) as engines, pytest.raises(ProviderError) as failed:
        execute((InParallel(tuple(RemoveVolume(n, "v") for n in NODES)),), engines)
    assert type(failed.value) is ProviderError
    assert failed.value.summary() == (
        "step 'remove volume v from node1, node2, node3' failed: node node1: volume v is not ours; node node3: no answer"
    )
    assert fakes[N2].volumes == {}


def test_a_bug_in_a_step_at_once_is_raised_as_it_is() -> None:
    fakes = {N1: Failing(N1, NotOurs("volume v is not ours")), N2: Failing(N2, ValueError("a bug")), N3: FakeEngine(N3)}
    with engines_of(fakes) as engines, pytest.raises(ValueError, match="a bug"):
        execute((InParallel(tuple(RemoveVolume(n, "v") for n in NODES)),), engines)


def example(kind: type) -> Step:
    """A step of ``kind``, its fields filled by their types."""
    values = {
        Node: N1,
        RouterSpec: ROUTER,
        ContainerSpec: ES,
        Routes: Routes("es", PORTS, N1, ES.name, 30.0),
        str: ES.name,
        bool: False,
        float: 1.0,
        tuple[int, ...]: (9200,),
        tuple[str, ...]: ("true",),
        tuple[tuple[str, str], ...]: ((L.MANAGED, "true"),),
    }
    return kind(**{name: values[hint] for name, hint in typing.get_type_hints(kind).items()})


@pytest.mark.parametrize("kind", typing.get_args(Step), ids=lambda kind: kind.__name__)
def test_every_kind_of_step_is_run_by_the_executor_in_a_move(kind: type) -> None:
    """Its match names every kind: none reaches the end of it ("no way to run")."""
    engine = mock.MagicMock()
    engine.published_ports.return_value = {9200: 20001}
    engine.run_in_container.return_value = (0, "")
    channel = mock.MagicMock(predicted=None)
    channel.push.return_value = ()

    @contextlib.contextmanager
    def opener(node: Node) -> Iterator[mock.MagicMock]:
        yield engine

    step = example(kind)
    with Engines(opener) as engines:  # type: ignore[arg-type]
        move = MoveContext(channel, Stops(engines), MoveReport("node1", "node2"))
        run_change(step, Run(engines, 1.0, move))
        run_change(InParallel((step, step)), Run(engines, 1.0, move))
        move.stops.close()
    assert describe(step)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ((0, "CHECKPOINT\n"), "move es: flushed flocker-dev-es in "),
        (
            (1, "psql: error: connection refused\n"),
            "move es: warning: the flush command of flocker-dev-es exited 1: psql: error: connection",
        ),
        ((None, ""), "move es: warning: the flush command of flocker-dev-es still running after 60s (left to end); the move goes on"),
    ],
    ids=["done", "failed", "too long"],
)
def test_a_flush_is_run_in_the_container_and_told_and_its_failure_is_not_the_moves(
    answer: tuple[int | None, str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = {n: FakeEngine(n) for n in NODES}
    running_es(fakes, N1)
    command = ("psql", "-c", "CHECKPOINT")
    fakes[N1].answers[command] = answer
    channel = mock.MagicMock(label="es")
    with engines_of(fakes) as engines:
        move = MoveContext(channel, Stops(engines), MoveReport("node1", "node2"))
        execute((FlushApplication(N1, ES.name, command, "psql -c CHECKPOINT"),), engines, move=move)
        move.stops.close()
    assert fakes[N1].commands == [(ES.name, command)]
    assert said in capsys.readouterr().out


def test_a_flush_of_a_secret_command_tells_its_status_and_not_its_output(capsys: pytest.CaptureFixture[str]) -> None:
    fakes = {n: FakeEngine(n) for n in NODES}
    running_es(fakes, N1)
    fakes[N1].answers[("flush", "hunter2")] = (2, "wrong password hunter2\n")
    with engines_of(fakes) as engines:
        move = MoveContext(mock.MagicMock(label="es"), Stops(engines), MoveReport("node1", "node2"))
        execute((FlushApplication(N1, ES.name, ("flush", "hunter2"), "[secret]"),), engines, move=move)
        move.stops.close()
    out = capsys.readouterr().out
    assert "flush flocker-dev-es on node1: [secret]" in out and "exited 2; the move goes on" in out and "hunter2" not in out
